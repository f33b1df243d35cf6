import {Args} from '@oclif/core'

import {apiFlags, withAdminApi} from '../../lib/admin/client.js'
import {MqCommand} from '../../lib/cli/base-command.js'

export default class UserDelete extends MqCommand<typeof UserDelete> {
  static args = {email: Args.string({description: 'the user e-mail address', required: true})}
  static description = "Delete an operator/portal user; the user's portal sessions end"
  static examples = ['<%= config.bin %> user delete old@example.com']
  static flags = {...apiFlags}

  async run(): Promise<{deleted: string}> {
    const r = await withAdminApi(this.home, this.mqConfig(), this.flags, (a) => a.deleteUser(this.args.email))
    if (!this.jsonEnabled()) this.out(`deleted ${r.deleted}`)
    return r
  }
}
