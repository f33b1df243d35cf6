/** What natscli and step users expect of a CLI: -h, typo suggestions that keep arguments, shell completion. */
import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {existsSync, readFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, describe, test} from 'node:test'

import {BIN, ROOT, runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'

describe('typos, -h and completion', {concurrency: 2}, () => {
  const home = tempHome('mq-clikit-')
  // one cache per shell: the bash and zsh tests run side by side and each rebuilds its cache
  const cache = tempHome('mq-clikit-cache-')
  const zcache = tempHome('mq-clikit-zcache-')
  after(() => {
    home.cleanup()
    cache.cleanup()
    zcache.cleanup()
  })

  test('-h is --help on the root, a topic and a command', async () => {
    for (const args of [['-h'], ['queue', '-h'], ['send', '-h'], ['cert', 'issue', '-h']]) {
      const h = await runCli(args, {home: home.dir})
      assert.equal(h.code, 0, `${args.join(' ')}: ${h.stderr}`)
      assert.match(h.stdout, /USAGE\n\s+\$ mq/)
    }
  })

  test('a mistyped command followed by arguments is still recognised, arguments kept in the hint', async () => {
    const r = await runCli(['keygn', 'bob'], {home: home.dir})
    assert.equal(r.code, 2)
    assert.equal(r.stdout, '')
    assert.equal(r.stderr, 'Error: "mq keygn bob" is not an mq command.\nTry this: mq keygen bob (or mq --help for the list)\n')
    const q = await runCli(['queue', 'lst', 'orders', '--json'], {home: home.dir})
    assert.equal(q.code, 2)
    assert.deepEqual(JSON.parse(q.stdout).error, {
      code: 'E_UNKNOWN_COMMAND',
      exit: 2,
      hint: 'Try this: mq queue list orders --json (or mq queue --help for the list)',
      message: '"mq queue lst orders" is not an mq command.',
    })
  })

  test('a mistyped flag names the flag meant', async () => {
    const r = await runCli(['send', '--quue', 'orders', '--to', 'bob', 'hi'], {home: home.dir})
    assert.equal(r.code, 2)
    assert.equal(r.stdout, '')
    assert.equal(r.stderr, 'Error: Nonexistent flag: --quue\nDid you mean --queue (not --quue)? Try this: mq send --help\n')
    const j = await runCli(['queue', 'list', '--timout', '2s', '--json'], {home: home.dir})
    assert.equal(j.code, 2)
    assert.equal(JSON.parse(j.stdout).error.hint, 'Did you mean --timeout (not --timout)? Try this: mq queue list --help')
  })

  test('on a terminal, "Did you mean ...?" runs the command meant with its arguments', {skip: existsSync('/usr/bin/script') ? false : 'no script(1) for a pseudo-terminal'}, async () => {
    // script(1) gives the CLI a pseudo-terminal; "y" answers @oclif/plugin-not-found's prompt
    const cmd = `MQ_HOME='${home.dir}' NO_COLOR=1 '${process.execPath}' '${BIN}' keygn bob`
    const run = (answer: string) =>
      spawnSync('script', ['-qec', cmd, '/dev/null'], {cwd: ROOT, encoding: 'utf8', input: answer, timeout: 60_000})
    // keygen ran, for bob: it says what keygen says in a home without a CA
    const yes = run('y\r')
    assert.match(yes.stdout, /Did you mean keygen\?/)
    assert.match(yes.stdout, /No certificate authority in /)
    const no = run('n\r')
    assert.match(no.stdout, /Try this: mq keygen bob \(/)
    assert.equal(no.status, 2)
  })

  test('bash completion: mq autocomplete bash sets up offline, and completing words works in a real bash', async () => {
    const env = {XDG_CACHE_HOME: cache.dir}
    const setup = await runCli(['autocomplete', 'bash'], {env, home: home.dir})
    assert.equal(setup.code, 0, setup.stderr)
    assert.match(setup.stdout, /mq autocomplete script bash/)
    const script = await runCli(['autocomplete', 'script', 'bash'], {env, home: home.dir})
    assert.equal(script.code, 0, script.stderr)
    assert.match(script.stdout, /MQ_AC_BASH_SETUP_PATH=.*bash_setup/)
    const complete = (words: string[]) => {
      const r = spawnSync('bash', ['-c', `${script.stdout}\nCOMP_WORDS=(${words.join(' ')}); COMP_CWORD=${words.length - 1}; _mq_autocomplete; printf '%s\\n' "\${COMPREPLY[@]}" | sort -u`], {encoding: 'utf8'})
      assert.equal(r.status, 0, r.stderr)
      return r.stdout.trim().split('\n')
    }
    assert.deepEqual(complete(['mq', 'que']), ['queue'])
    assert.deepEqual(complete(['mq', 'queue', 'de']), ['declare', 'delete'])
    assert.deepEqual(complete(['mq', 'send', '--qu']), ['--queue'])
  })

  test('zsh completion: the setup script and a completion function that knows the commands and flags', async () => {
    const env = {XDG_CACHE_HOME: zcache.dir}
    const setup = await runCli(['autocomplete', 'zsh'], {env, home: home.dir})
    assert.equal(setup.code, 0, setup.stderr)
    const script = await runCli(['autocomplete', 'script', 'zsh'], {env, home: home.dir})
    assert.match(script.stdout, /MQ_AC_ZSH_SETUP_PATH=.*zsh_setup/)
    const fn = readFileSync(join(zcache.dir, 'mq', 'autocomplete', 'functions', 'zsh', '_mq'), 'utf8')
    assert.match(fn, /^#compdef mq/)
    assert.match(fn, /queue/)
    assert.match(fn, /--dead-letter/)
  })
})
