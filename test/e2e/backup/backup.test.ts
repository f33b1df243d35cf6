import assert from 'node:assert/strict'
import {closeSync, mkdirSync, openSync, readdirSync, readSync, statSync, writeFileSync, writeSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, test} from 'node:test'

import Database from 'better-sqlite3'

import {spawnBroker, type BrokerProcess} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'

const PASS = 'correct horse battery staple'

describe('mq backup', () => {
  let broker: BrokerProcess
  const work = tempHome('mq-backup-work-')
  const archive = join(work.dir, 'home.mqb')
  const passFile = join(work.dir, 'pass')
  const confirmedBefore: string[] = []
  let confirmedDuring = 0

  before(async () => {
    writeFileSync(passFile, PASS + '\n', {mode: 0o600})
    broker = await spawnBroker()
    for (const name of ['alice', 'mallory']) assert.equal((await runCli(['cert', 'issue', name, '--type', 'client'], {home: broker.home})).code, 0)
    assert.equal((await runCli(['cert', 'revoke', 'mallory', '--reason', 'key-compromise'], {home: broker.home})).code, 0)
  })
  after(async () => {
    await broker?.cleanup()
    work.cleanup()
  })

  /** A body of `len` bytes in a pattern of its own (`mul`), starting with `tag`. */
  const patterned = (len: number, mul: number, tag: string): Buffer => {
    const b = Buffer.alloc(len)
    for (let j = 0; j < b.length; j++) b[j] = (j * mul) & 0xff
    b.write(tag)
    return b
  }

  /**
   * Takes a backup of the running broker into `name` while `churnRound` runs round after round (others
   * published and acked), then closes `c`; the archive's path once `mq backup create` exited 0.
   */
  async function backupWhile(c: {close: () => Promise<void>}, name: string, churnRound: (i: number) => Promise<void>): Promise<string> {
    let stop = false
    const churn = (async () => {
      for (let i = 0; !stop; i++) await churnRound(i)
    })()
    const out = join(work.dir, name)
    const created = await runCli(['backup', 'create', out, '--passphrase-file', passFile, '--json'], {home: broker.home})
    stop = true
    await churn
    await c.close()
    assert.equal(created.code, 0, created.stderr + created.stdout)
    return out
  }

  /**
   * Restores `archive` into a new home, runs `inspect` on that home, then starts a broker on it and
   * takes every message of `queue`: their bodies by message id.
   */
  async function restoreAndDrain(archive: string, queue: string, inspect: (home: string) => void = () => {}): Promise<Map<string, Buffer>> {
    const target = tempHome('mq-backup-drain-')
    try {
      const restored = await runCli(['backup', 'restore', archive, '--home', target.dir, '--passphrase-file', passFile, '--force', '--json'])
      assert.equal(restored.code, 0, restored.stderr + restored.stdout)
      inspect(target.dir)
      const b2 = await spawnBroker({home: target.dir})
      try {
        const c2 = await b2.connect('admin')
        const got = new Map<string, Buffer>()
        for (;;) {
          const d = await c2.get(queue, {noAck: true})
          if (!d) break
          got.set(d.messageId, d.body)
        }
        await c2.close()
        return got
      } finally {
        await b2.cleanup()
      }
    } finally {
      target.cleanup()
    }
  }

  test('a backup taken mid-traffic restores into a new home: every message confirmed before it, the CA and the CRL', async () => {
    const c = await broker.connect('admin')
    await c.declareQueue('orders', {durable: true})
    // publishers run before, during and after the backup
    let stop = false
    let phase: 'before' | 'during' = 'before'
    let seq = 0
    const publisher = async () => {
      while (!stop) {
        const body = `order-${seq++}`
        await c.publish('', 'orders', Buffer.from(body))
        if (phase === 'before') confirmedBefore.push(body)
        else confirmedDuring++
      }
    }
    const pubs = [publisher(), publisher(), publisher()]
    while (confirmedBefore.length < 1500) await new Promise((r) => setTimeout(r, 20))
    phase = 'during'
    const created = await runCli(['backup', 'create', archive, '--passphrase-file', passFile, '--json'], {home: broker.home})
    stop = true
    await Promise.all(pubs)
    await c.close()
    assert.equal(created.code, 0, created.stderr + created.stdout)
    const summary = JSON.parse(created.stdout) as {files: number; sqlite: string[]}
    assert.ok(summary.sqlite.includes('data/broker.db'), created.stdout)
    assert.equal(statSync(archive).mode & 0o777, 0o600)
    assert.ok(confirmedDuring > 0, 'publishers kept running while the backup was taken')

    const verified = await runCli(['backup', 'verify', archive, '--json'], {env: {MQ_BACKUP_PASSPHRASE: PASS}})
    assert.equal(verified.code, 0, verified.stderr)
    assert.equal(JSON.parse(verified.stdout).ok, true)

    const target = tempHome('mq-backup-restored-')
    const restored = await runCli(['backup', 'restore', archive, '--home', target.dir, '--passphrase-file', passFile, '--force', '--json'])
    assert.equal(restored.code, 0, restored.stderr + restored.stdout)
    assert.equal(statSync(join(target.dir, 'pki', 'ca.key')).mode & 0o777, 0o600)
    const b2 = await spawnBroker({home: target.dir})
    try {
      const c2 = await b2.connect('admin')
      const got = new Set<string>()
      for (;;) {
        const d = await c2.get('orders', {noAck: true})
        if (!d) break
        got.add(d.body.toString())
      }
      const missing = confirmedBefore.filter((b) => !got.has(b))
      assert.deepEqual(missing, [], `${missing.length} of ${confirmedBefore.length} messages confirmed before the backup are missing`)
      await c2.close()

      // the CA still signs: a certificate issued from the restored home is accepted by the restored broker
      assert.equal((await runCli(['cert', 'issue', 'bob', '--type', 'client'], {home: target.dir})).code, 0)
      const bob = await b2.connect('bob')
      await bob.declareQueue('bob.inbox', {durable: true})
      await bob.close()
      const alice = await b2.connect('alice')
      await alice.close()
      // the CRL still holds: the revoked certificate is refused
      await assert.rejects(b2.connect('mallory', {timeoutMs: 5000}))
    } finally {
      await b2.cleanup()
      target.cleanup()
    }
  })

  test('big durable bodies (in body segments) confirmed before a backup taken while others are published and acked restore byte for byte', async () => {
    const c = await broker.connect('admin')
    await c.declareQueue('big.keep', {durable: true})
    await c.declareQueue('big.churn', {durable: true})
    const bodyOf = (i: number) => patterned(100 * 1024 + i, i + 3, `big-${i}`)
    for (let i = 0; i < 40; i++) await c.publish('', 'big.keep', bodyOf(i), {messageId: `keep-${i}`})
    // meanwhile segments fill and empty: big messages published and acked as fast as they go
    const out = await backupWhile(c, 'big.mqb', async (i) => {
      await c.publish('', 'big.churn', bodyOf(i % 7), {messageId: `churn-${i}`})
      const d = await c.get('big.churn', {noAck: true})
      assert.ok(d)
    })
    const got = await restoreAndDrain(out, 'big.keep', (home) => {
      const segs = readdirSync(join(home, 'data', 'bodies')).filter((n) => n.endsWith('.seg'))
      assert.ok(segs.length > 0, 'the body segments are in the backup')
      for (const n of segs) assert.equal(statSync(join(home, 'data', 'bodies', n)).mode & 0o777, 0o600)
    })
    const wrong = Array.from({length: 40}, (_, i) => i).filter((i) => !got.get(`keep-${i}`)?.equals(bodyOf(i)))
    assert.deepEqual(wrong, [], 'every big body confirmed before the backup comes back as sent')
  })

  test('small durable messages whose sealed groups live in body segments restore byte for byte from a backup taken while others are acked', async () => {
    const c = await broker.connect('admin')
    await c.declareQueue('small.keep', {durable: true})
    await c.declareQueue('small.churn', {durable: true})
    const bodyOf = (i: number) => patterned(1024, i + 5, `small-${i}`)
    // published without waiting for each confirm: a commit then holds enough messages for a group of
    // GROUP_SEGMENT_MIN bytes or more, which goes to a segment, not to broker.db
    const N = 3000
    await Promise.all(Array.from({length: N}, (_, i) => c.publish('', 'small.keep', bodyOf(i), {messageId: `small-${i}`})))
    const segsBefore = readdirSync(join(broker.home, 'data', 'bodies')).filter((n) => n.endsWith('.seg'))
    assert.ok(segsBefore.length > 0, 'the small messages went to body segments')
    const out = await backupWhile(c, 'small.mqb', async (i) => {
      await Promise.all(Array.from({length: 200}, (_, j) => c.publish('', 'small.churn', bodyOf(j), {messageId: `churn-${i}-${j}`})))
      for (let j = 0; j < 200; j++) assert.ok(await c.get('small.churn', {noAck: true}))
    })
    const got = await restoreAndDrain(out, 'small.keep')
    const wrong = Array.from({length: N}, (_, i) => i).filter((i) => !got.get(`small-${i}`)?.equals(bodyOf(i)))
    assert.deepEqual(wrong.slice(0, 10), [], `every small message confirmed before the backup comes back as sent (${wrong.length} wrong)`)
    assert.equal(got.size, N)
  })

  test('a store whose latest commits are still only in its WAL (a writer holds it open) is backed up with them', async () => {
    const home = tempHome('mq-backup-wal-')
    mkdirSync(join(home.dir, 'data'), {mode: 0o700})
    const db = new Database(join(home.dir, 'data', 'replay-x.db'))
    try {
      db.pragma('journal_mode = WAL')
      db.pragma('wal_autocheckpoint = 0')
      db.exec('CREATE TABLE t (v TEXT)')
      const ins = db.prepare('INSERT INTO t (v) VALUES (?)')
      for (let i = 0; i < 500; i++) ins.run(`row-${i}`)
      const r = await runCli(['backup', 'create', join(work.dir, 'wal.mqb')], {env: {MQ_BACKUP_PASSPHRASE: PASS}, home: home.dir})
      assert.equal(r.code, 0, r.stderr)
      const target = tempHome('mq-backup-wal-restored-')
      try {
        assert.equal((await runCli(['backup', 'restore', join(work.dir, 'wal.mqb'), '--home', target.dir, '--force'], {env: {MQ_BACKUP_PASSPHRASE: PASS}})).code, 0)
        const copy = new Database(join(target.dir, 'data', 'replay-x.db'), {readonly: true})
        assert.equal((copy.prepare('SELECT COUNT(*) AS n FROM t').get() as {n: number}).n, 500)
        copy.close()
      } finally {
        target.cleanup()
      }
    } finally {
      db.close()
      home.cleanup()
    }
  })

  test('with a MySQL records store: the records key is in the archive and the mysqldump line is printed', async () => {
    const home = tempHome('mq-backup-mysql-')
    try {
      mkdirSync(join(home.dir, 'secrets'), {mode: 0o700})
      writeFileSync(join(home.dir, 'secrets', 'records.key'), 'k'.repeat(44), {mode: 0o600})
      const env = {MQ_BACKUP_PASSPHRASE: PASS, MQ_STORE_URL: 'mysql://mq:s3cret@127.0.0.1:3306/mqrecords'}
      const r = await runCli(['backup', 'create', join(work.dir, 'mysql.mqb'), '--json'], {env, home: home.dir})
      assert.equal(r.code, 0, r.stderr)
      assert.match(r.stderr, /mysqldump --single-transaction .*--user mq -p mqrecords/)
      assert.doesNotMatch(r.stderr + r.stdout, /s3cret/)
      const j = JSON.parse(r.stdout) as {mysql: {records_key_included: boolean; command: string}}
      assert.equal(j.mysql.records_key_included, true)
      assert.match(j.mysql.command, /^mysqldump --single-transaction/)
    } finally {
      home.cleanup()
    }
  })

  test('a wrong passphrase exits 77, an altered archive 65, a non-empty home without --force is refused', async () => {
    const wrong = await runCli(['backup', 'verify', archive, '--json'], {env: {MQ_BACKUP_PASSPHRASE: 'not the passphrase'}})
    assert.equal(wrong.code, 77, wrong.stdout)
    assert.equal(JSON.parse(wrong.stdout).error.code, 'E_BACKUP_PASSPHRASE')

    const size = statSync(archive).size
    const fd = openSync(archive, 'r+')
    const b = Buffer.alloc(1)
    readSync(fd, b, 0, 1, Math.floor(size / 2))
    b[0] ^= 0x01
    writeSync(fd, b, 0, 1, Math.floor(size / 2))
    closeSync(fd)
    const tampered = await runCli(['backup', 'verify', archive], {env: {MQ_BACKUP_PASSPHRASE: PASS}})
    assert.equal(tampered.code, 65, tampered.stderr)
    assert.match(tampered.stderr, /damaged or was altered/)
    const target = tempHome('mq-backup-tampered-')
    try {
      const r = await runCli(['backup', 'restore', archive, '--home', target.dir, '--force'], {env: {MQ_BACKUP_PASSPHRASE: PASS}})
      assert.equal(r.code, 65, r.stderr)
      // nothing of a rejected archive is moved into place
      assert.throws(() => statSync(join(target.dir, 'pki', 'ca.key')))
    } finally {
      target.cleanup()
    }

    const full = await runCli(['backup', 'restore', archive, '--home', broker.home], {env: {MQ_BACKUP_PASSPHRASE: PASS}})
    assert.equal(full.code, 2, full.stderr)
    assert.match(full.stderr, /not empty/)
  })
})
