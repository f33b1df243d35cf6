import {Args, Flags} from '@oclif/core'

import {apiFlags, withAdminApi} from '../../lib/admin/client.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {UsageError} from '../../lib/errors.js'
import {USER_ROLES} from '../../lib/records/store.js'

export default class UserCreate extends MqCommand<typeof UserCreate> {
  static args = {email: Args.string({description: 'the user e-mail address', required: true})}
  static description = 'Create an operator/portal user; the password is read from stdin (never a flag, so it stays out of shell history) and stored as scrypt'
  static examples = ['printf %s "$PASSWORD" | <%= config.bin %> user create admin@example.com --role admin']
  static flags = {
    ...apiFlags,
    role: Flags.option({default: 'user', description: 'role', options: USER_ROLES})(),
  }

  async run(): Promise<{email: string; role: string; created_at: string}> {
    const chunks: Buffer[] = []
    for await (const c of process.stdin) chunks.push(c as Buffer)
    const password = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '')
    if (password === '') throw new UsageError('E_NO_PASSWORD', 'No password on stdin.', {hint: 'Try this: printf %s "$PASSWORD" | mq user create EMAIL'})
    const u = await withAdminApi(this.home, this.mqConfig(), this.flags, (a) => a.createUser(this.args.email, password, this.flags.role))
    if (!this.jsonEnabled()) this.out(`created ${u.email} (${u.role})`)
    return u
  }
}
