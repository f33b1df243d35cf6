#!/usr/bin/env node
// Builds the optional native envelope crypto (native/mqcrypto.c -> native/build/Release/mqcrypto.node)
// with node-gyp against the headers of the Node that runs this script; `npm run build` calls it. Nothing
// is downloaded: without the headers beside this Node, or without node-gyp or a compiler, it says so and
// the envelope uses node:crypto (same bytes, more CPU per message; docs/envelope.md, "Native AES-GCM").
// MQ_NATIVE_BUILD=0 skips it; MQ_NATIVE_BUILD=require makes a failed build fail `npm run build`.
import {spawnSync} from 'node:child_process'
import {existsSync, rmSync} from 'node:fs'
import {createRequire} from 'node:module'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const dir = join(root, 'native')
const mode = (process.env.MQ_NATIVE_BUILD ?? '').toLowerCase()

function giveUp(why, detail = '') {
  // no stale addon from an earlier build may be loaded instead
  rmSync(join(dir, 'build'), {force: true, recursive: true})
  if (detail) process.stderr.write(detail.slice(-4000) + '\n')
  const msg = `native envelope crypto not built (${why}): node:crypto is used instead`
  if (mode === 'require') {
    console.error(`error: ${msg}`)
    process.exit(1)
  }
  console.warn(`warning: ${msg}`)
  process.exit(0)
}

if (['0', 'false', 'off', 'no'].includes(mode)) {
  rmSync(join(dir, 'build'), {force: true, recursive: true})
  console.log('native envelope crypto: skipped (MQ_NATIVE_BUILD=0)')
  process.exit(0)
}

// the headers of this very Node (node_api.h and its OpenSSL headers): <prefix>/include/node
const nodedir = resolve(dirname(process.execPath), '..')
if (!existsSync(join(nodedir, 'include', 'node', 'node_api.h')) || !existsSync(join(nodedir, 'include', 'node', 'openssl', 'evp.h'))) {
  giveUp(`no Node headers at ${join(nodedir, 'include', 'node')}`)
}

// npm runs scripts with npm_config_node_gyp set to its own node-gyp; else the one beside npm
const candidates = [process.env.npm_config_node_gyp, join(nodedir, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')]
const gyp = candidates.find((p) => p && existsSync(p))
if (!gyp) giveUp('node-gyp not found (run the build through npm: npm run build)')

const r = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodedir}`, '--directory', dir], {
  encoding: 'utf8',
  env: {...process.env, npm_config_nodedir: nodedir},
  timeout: 300_000,
})
if (r.error || r.status !== 0) giveUp(r.error ? r.error.message : `node-gyp exited with ${r.status ?? r.signal}`, `${r.stdout ?? ''}${r.stderr ?? ''}`)
const addon = join(dir, 'build', 'Release', 'mqcrypto.node')
if (!existsSync(addon)) giveUp('node-gyp made no mqcrypto.node')
try {
  createRequire(import.meta.url)(addon)
} catch (error) {
  giveUp(`it does not load: ${error.message}`)
}
console.log(`native envelope crypto: built ${addon.slice(root.length + 1)}`)
