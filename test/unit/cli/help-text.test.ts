/**
 * Every command's help, read from the command classes themselves: no internal words (planning documents,
 * issue numbers, notes to ourselves), and the one-line summary a topic lists is a whole phrase.
 */
import assert from 'node:assert/strict'
import {readFileSync, readdirSync, statSync} from 'node:fs'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'
import {test} from 'node:test'

const COMMANDS = fileURLToPath(new URL('../../../src/commands', import.meta.url))
const PACKAGE = fileURLToPath(new URL('../../../../package.json', import.meta.url))

/** words that belong to how we work, not to the product */
const BANNED = /\bseeds?\b|\bseed's\b|\bissue #?\d+|(?<![A-Za-z0-9])#\d{1,4}\b|\bTODO\b|\bFIXME\b|\bXXX\b|\bthe lead\b|\bstub(bed)?\b|\bhack\b/i

interface CommandClass {
  summary?: string
  description?: string
  examples?: (string | {command: string; description?: string})[]
  flags?: Record<string, {summary?: string; description?: string; hidden?: boolean}>
  args?: Record<string, {description?: string}>
  hidden?: boolean
}

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n)
    return statSync(p).isDirectory() ? files(p) : n.endsWith('.js') ? [p] : []
  })
}

async function commands(): Promise<[string, CommandClass][]> {
  const out: [string, CommandClass][] = []
  for (const f of files(COMMANDS)) {
    const id = f.slice(COMMANDS.length + 1, -3).replace(/\/index$/, '').replaceAll('/', ' ')
    out.push([id, (await import(f)).default as CommandClass])
  }
  return out
}

test('no command, flag, argument, example or topic uses internal words', async () => {
  const bad: string[] = []
  const check = (where: string, text: string | undefined) => {
    if (text && BANNED.test(text)) bad.push(`${where}: ${JSON.stringify(BANNED.exec(text)![0])} in ${JSON.stringify(text.slice(0, 100))}`)
  }
  const all = await commands()
  assert.ok(all.length > 40, `found ${all.length} commands under ${COMMANDS}`)
  for (const [id, c] of all) {
    check(`${id} summary`, c.summary)
    check(`${id} description`, c.description)
    for (const e of c.examples ?? []) check(`${id} example`, typeof e === 'string' ? e : `${e.command} ${e.description ?? ''}`)
    for (const [name, f] of Object.entries(c.flags ?? {})) check(`${id} --${name}`, f.summary ?? f.description)
    for (const [name, a] of Object.entries(c.args ?? {})) check(`${id} ${name}`, a.description)
  }
  const topics = (JSON.parse(readFileSync(PACKAGE, 'utf8')) as {oclif: {topics: Record<string, {description: string}>}}).oclif.topics
  for (const [name, t] of Object.entries(topics)) check(`topic ${name}`, t.description)
  assert.deepEqual(bad, [])
})

test('the summary a topic lists is a whole phrase of a readable length', async () => {
  const bad: string[] = []
  for (const [id, c] of await commands()) {
    if (c.hidden) continue
    // oclif lists the summary, else the description's first line
    const line = (c.summary ?? c.description?.split('\n')[0] ?? '').trim()
    if (!line) bad.push(`${id}: no summary`)
    else if (/[,;:(]$|\b(and|or|the|a|of|to|with|its)$/i.test(line)) bad.push(`${id}: cut mid-sentence: ${JSON.stringify(line.slice(-60))}`)
    else if (line.length > 160) bad.push(`${id}: ${line.length} characters; give it a summary`)
  }
  assert.deepEqual(bad, [])
})

test('the banned-word check catches what it is for', () => {
  for (const t of ["the seed's figures", 'see issue 5', 'fixed in #12', 'TODO: later', 'a stub for now']) assert.match(t, BANNED)
  for (const t of ['seeded random ids', 'reissue the certificate', 'PKCS#8 keys', 'mq queue declare orders']) assert.doesNotMatch(t, BANNED)
})
