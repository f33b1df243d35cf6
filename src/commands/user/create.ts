import {Args, Flags} from '@oclif/core'

import {apiFlags, withAdminApi} from '../../lib/admin/client.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {readPasswordFromStdin} from '../../lib/cli/password.js'
import {USER_ROLES, type UserRecord} from '../../lib/records/store.js'

export default class UserCreate extends MqCommand<typeof UserCreate> {
  static args = {email: Args.string({description: 'the user e-mail address', required: true})}
  static description = `Create an operator/portal user; the password is read from stdin (never a flag, so it stays out of shell history) and stored as scrypt.
A user with --client NAME sees that client identity's messages in the portal; admins manage certificates and users.`
  static examples = [
    'printf %s "$PASSWORD" | <%= config.bin %> user create admin@example.com --role admin',
    'printf %s "$PASSWORD" | <%= config.bin %> user create ops@acme.example --role user --client acme',
  ]
  static flags = {
    ...apiFlags,
    role: Flags.option({default: 'user', description: 'role', options: USER_ROLES})(),
    client: Flags.string({description: "the client identity whose messages the user sees in the portal (the CN of that client's certificate)"}),
  }

  async run(): Promise<UserRecord> {
    const password = await readPasswordFromStdin('mq user create EMAIL')
    const u = await withAdminApi(this.home, this.mqConfig(), this.flags, (a) => a.createUser(this.args.email, password, this.flags.role, this.flags.client))
    if (!this.jsonEnabled()) this.out(`created ${u.email} (${u.role}${u.client_id ? `, client ${u.client_id}` : ''})`)
    return u
  }
}
