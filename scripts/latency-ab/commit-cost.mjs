// usage: node commit-cost.mjs ROOT [DIR] -> what one SQLite commit (WAL, synchronous=FULL, as the broker's
// writer) and one raw fdatasync cost on the disk holding DIR (default: the temp dir), as percentiles
import {createRequire} from 'node:module'
import {mkdtempSync, openSync, fdatasyncSync, writeSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

const [root, base = tmpdir()] = process.argv.slice(2)
const Database = createRequire(`${root}/package.json`)('better-sqlite3')
const dir = mkdtempSync(join(base, 'mq-commit-cost-'))
const pcts = (lat) => {
  lat.sort((a, b) => a - b)
  const p = (q) => lat[Math.min(lat.length - 1, Math.floor(q * lat.length))].toFixed(3)
  return `p50 ${p(0.5)} p90 ${p(0.9)} p99 ${p(0.99)} p99.9 ${p(0.999)} max ${lat[lat.length - 1].toFixed(3)} ms`
}
try {
  const db = new Database(join(dir, 'c.db'))
  db.pragma('journal_mode = WAL')
  db.pragma('synchronous = FULL')
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)')
  const ins = db.prepare('INSERT INTO t (id, b) VALUES (?, ?)')
  const body = Buffer.alloc(300)
  const tx = db.transaction((i, n) => {
    for (let k = 0; k < n; k++) ins.run(i * 1000 + k, body)
  })
  for (const n of [1, 10, 100]) {
    const lat = []
    for (let i = 0; i < 2000; i++) {
      const t = process.hrtime.bigint()
      tx(i + n * 100000, n)
      lat.push(Number(process.hrtime.bigint() - t) / 1e6)
    }
    console.log(`commit of ${n} row(s): ${pcts(lat)}`)
  }
  db.close()
  const fd = openSync(join(dir, 'raw'), 'w')
  const lat = []
  for (let i = 0; i < 2000; i++) {
    writeSync(fd, body, 0, body.length, i * 4096)
    const t = process.hrtime.bigint()
    fdatasyncSync(fd)
    lat.push(Number(process.hrtime.bigint() - t) / 1e6)
  }
  console.log(`raw fdatasync: ${pcts(lat)}`)
} finally {
  rmSync(dir, {force: true, recursive: true})
}
