import {Args, Flags} from '@oclif/core'

import {verifyBackup, type BackupSummary} from '../../lib/backup/index.js'
import {backupPassphrase} from '../../lib/backup/passphrase.js'
import {MqCommand} from '../../lib/cli/base-command.js'

export default class BackupVerify extends MqCommand<typeof BackupVerify> {
  static description = 'Decrypt and check a backup archive (every chunk authenticated, every file checksum) without writing anything'
  static examples = ['<%= config.bin %> backup verify mq.mqb --passphrase-file ~/.mq-backup-pass --json']
  static args = {file: Args.string({description: 'archive to check', required: true})}
  static flags = {
    'passphrase-file': Flags.string({description: 'file holding the backup passphrase (or set MQ_BACKUP_PASSPHRASE; else a prompt on a terminal)'}),
  }

  async run(): Promise<BackupSummary & {ok: true}> {
    const passphrase = await backupPassphrase({confirm: false, file: this.flags['passphrase-file']})
    const r = verifyBackup(this.args.file, passphrase)
    if (!this.jsonEnabled()) this.out(`${r.file}: OK, ${r.files} files, ${r.bytes} bytes, taken ${r.created_at}`)
    return {...r, ok: true}
  }
}
