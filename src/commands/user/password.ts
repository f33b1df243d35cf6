import {Args} from '@oclif/core'

import {apiFlags, withAdminApi} from '../../lib/admin/client.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {readPasswordFromStdin} from '../../lib/cli/password.js'

export default class UserPassword extends MqCommand<typeof UserPassword> {
  static args = {email: Args.string({description: 'the user e-mail address', required: true})}
  static description = "Set a user's password (read from stdin); the user's portal sessions end"
  static examples = ['printf %s "$NEW_PASSWORD" | <%= config.bin %> user password ops@acme.example']
  static flags = {...apiFlags}

  async run(): Promise<{email: string; password_changed: boolean}> {
    const password = await readPasswordFromStdin('mq user password EMAIL')
    const r = await withAdminApi(this.home, this.mqConfig(), this.flags, (a) => a.setPassword(this.args.email, password))
    if (!this.jsonEnabled()) this.out(`password changed for ${r.email}`)
    return r
  }
}
