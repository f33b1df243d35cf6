export * from './envelope.js'
export * from './ciphermq.js'
export * from './replay.js'
export * from './bench.js'
