import {Args, Flags} from '@oclif/core'

import {createBackup, type BackupSummary} from '../../lib/backup/index.js'
import {backupPassphrase} from '../../lib/backup/passphrase.js'
import {MqCommand} from '../../lib/cli/base-command.js'

export default class BackupCreate extends MqCommand<typeof BackupCreate> {
  static description = 'Write one consistent, encrypted archive of the home (SQLite stores via online backup, PKI, secrets, keys, config) while servers run'
  static examples = ['MQ_BACKUP_PASSPHRASE=... <%= config.bin %> backup create /backups/mq-$(date +%F).mqb', '<%= config.bin %> backup create mq.mqb --passphrase-file ~/.mq-backup-pass --json']
  static args = {file: Args.string({description: 'archive to write (0600)', required: true})}
  static flags = {
    'passphrase-file': Flags.string({description: 'file holding the backup passphrase (or set MQ_BACKUP_PASSPHRASE; else a prompt on a terminal)'}),
  }

  async run(): Promise<BackupSummary> {
    const config = this.mqConfig()
    const passphrase = await backupPassphrase({confirm: true, file: this.flags['passphrase-file']})
    const r = await createBackup({config, file: this.args.file, home: this.home, passphrase})
    if (r.mysql) {
      this.note(`The records store is MySQL: this archive holds its key (secrets/records.key) but not its rows. Dump them too, at the same time:\n  ${r.mysql.command}`)
    }
    if (!this.jsonEnabled()) this.out(`${r.file}: ${r.files} files, ${r.bytes} bytes (SQLite: ${r.sqlite.join(', ') || 'none'}), encrypted`)
    return r
  }
}
