/** Issue 20: help as natscli/step users expect it: -h works, no internal words, summaries are whole sentences. */
import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {join} from 'node:path'
import {test} from 'node:test'

import {ROOT, runCli} from '../../helpers/cli.js'

interface ManifestCommand {
  id: string
  summary?: string
  description?: string
  flags: Record<string, {description?: string}>
}

test('no help text uses internal words (the seed, issue numbers)', () => {
  const manifest = JSON.parse(readFileSync(join(ROOT, 'oclif.manifest.json'), 'utf8')) as {commands: Record<string, ManifestCommand>}
  const bad: string[] = []
  for (const c of Object.values(manifest.commands)) {
    const texts = [c.summary, c.description, ...Object.values(c.flags).map((f) => f.description)]
    for (const t of texts) if (t && /\bseed'?s?\b|\bissue \d+/i.test(t)) bad.push(`${c.id}: ${t.slice(0, 80)}`)
  }
  assert.deepEqual(bad, [])
})

test('-h is --help, and command lists show whole sentences', async () => {
  const h = await runCli(['queue', 'list', '-h'])
  assert.equal(h.code, 0, h.stderr)
  assert.match(h.stdout, /USAGE\n\s+\$ mq queue list/)
  for (const topic of ['broker', 'stats', 'proxy', 'worker']) {
    const r = await runCli([topic, '-h'])
    assert.equal(r.code, 0, r.stderr)
    // a summary in the COMMANDS list never ends on a comma or semicolon, as a description cut at its first line did
    const listed = r.stdout.split('\n').filter((l) => /^\s+mq \S+ \S+\s{2,}\S/.test(l))
    for (const l of listed) assert.doesNotMatch(l.trimEnd(), /[,;(]$/, `${topic}: ${l}`)
  }
  const revoke = await runCli(['cert', 'revoke', '-h'])
  assert.match(revoke.stdout, /mq client revoke/)
  const crevoke = await runCli(['client', 'revoke', '-h'])
  assert.match(crevoke.stdout, /mq cert revoke/)
})
