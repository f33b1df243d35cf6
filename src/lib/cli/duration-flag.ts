import {Flags} from '@oclif/core'

import {parseDuration} from '../util/duration.js'

/** A duration flag: "500ms", "10s", "2m", "1h" (a bare number is refused); the command sees milliseconds. */
export const durationFlag = Flags.custom<number>({
  helpValue: '<duration>',
  async parse(input, _ctx, opts) {
    return parseDuration(input, `--${opts.name}`)
  },
})
