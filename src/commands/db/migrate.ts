import {Flags} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import {RECORDS_MIGRATIONS, RECORDS_MIGRATIONS_TABLE} from '../../lib/records/migrations.js'
import {storeFailure} from '../../lib/records/store.js'
import {migrate, openStore, redact} from '../../lib/store/sql.js'

export default class DbMigrate extends MqCommand<typeof DbMigrate> {
  static description = `Apply pending migrations of the records store (messages, clients, users, audit_log) on SQLite or MySQL.
The broker also applies them at start; this command is for deployments that migrate ahead of a rollout.`
  static examples = ['<%= config.bin %> db migrate', '<%= config.bin %> db migrate --store mysql://mq:secret@127.0.0.1:3306/mq', '<%= config.bin %> db migrate --status --json']
  static flags = {
    store: Flags.string({aliases: ['url'], deprecateAliases: true, description: 'store URL [default: store.url (MQ_STORE_URL), sqlite]'}),
    status: Flags.boolean({description: 'only show applied and pending migrations'}),
  }

  async run(): Promise<{store: string; applied: number[]; pending: number[]; current: number}> {
    const config = this.mqConfig(this.flags.store ? {store: {url: this.flags.store}} : undefined)
    const url = this.flags.store ?? config.store.url
    const store = await openStore({dataDir: this.home.data, file: 'records.db', url})
    try {
      let applied: number[] = []
      const doneIds = async () => {
        try {
          return new Set((await store.all<{id: number}>(`SELECT id FROM ${RECORDS_MIGRATIONS_TABLE}`)).map((r) => Number(r.id)))
        } catch {
          return new Set<number>()
        }
      }
      if (!this.flags.status) applied = await migrate(store, RECORDS_MIGRATIONS_TABLE, RECORDS_MIGRATIONS).catch((error) => Promise.reject(storeFailure(error, store.label)))
      const done = await doneIds()
      const pending = RECORDS_MIGRATIONS.filter((m) => !done.has(m.id)).map((m) => m.id)
      const out = {applied, current: Math.max(0, ...done), pending, store: redact(store.label)}
      if (!this.jsonEnabled()) {
        this.out(this.flags.status ? `${out.store}: at version ${out.current}, pending ${pending.length ? pending.join(', ') : 'none'}` : applied.length ? `${out.store}: applied ${applied.map((id) => `${id} (${RECORDS_MIGRATIONS.find((m) => m.id === id)!.name})`).join(', ')}; now at version ${out.current}` : `${out.store}: up to date at version ${out.current}`)
      }
      return out
    } finally {
      await store.close()
    }
  }
}
