import {Args, Flags} from '@oclif/core'

import {restoreBackup, type BackupSummary} from '../../lib/backup/index.js'
import {backupPassphrase} from '../../lib/backup/passphrase.js'
import {MqCommand} from '../../lib/cli/base-command.js'

export default class BackupRestore extends MqCommand<typeof BackupRestore> {
  static description = 'Restore a backup archive into a home (checked in full before anything is moved into place)'
  static examples = ['<%= config.bin %> backup restore mq.mqb --home /srv/mq-new', '<%= config.bin %> backup restore mq.mqb --home ~/.mq --force']
  static args = {file: Args.string({description: 'archive to restore', required: true})}
  static flags = {
    force: Flags.boolean({default: false, description: 'restore into a home that is not empty (files the backup holds are replaced)'}),
    'passphrase-file': Flags.string({description: 'file holding the backup passphrase (or set MQ_BACKUP_PASSPHRASE; else a prompt on a terminal)'}),
  }

  async run(): Promise<BackupSummary & {home: string}> {
    const passphrase = await backupPassphrase({confirm: false, file: this.flags['passphrase-file']})
    const r = restoreBackup({file: this.args.file, force: this.flags.force, home: this.home.root, passphrase})
    if (r.mysql) this.note(`The records store was MySQL (${r.mysql.database}): load its dump too, e.g. mysql ${r.mysql.database} < ${r.mysql.database}-records.sql`)
    if (!this.jsonEnabled()) this.out(`restored ${r.files} files into ${r.home}`)
    return r
  }
}
