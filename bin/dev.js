#!/usr/bin/env node
// Development entry: rebuilds nothing, runs the compiled tree with oclif's development flags
// (stack traces, no manifest cache). Run `npm run build` (or `tsc -w`) alongside.
import {execute} from '@oclif/core'

await execute({development: true, dir: import.meta.url})
