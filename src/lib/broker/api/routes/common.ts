/** What every monitor route needs: queue names, client ids, statuses and figures are for the monitor right (admins have it). */
export const MONITOR = {roles: ['monitor']}
export const ADMIN = {roles: ['admin']}

/** :name of a queue, :id of a message: any non-empty segment (the engine says whether it exists) */
export const nameParams = {properties: {name: {minLength: 1, type: 'string'}}, required: ['name'], type: 'object'} as const
export const idParams = {properties: {id: {minLength: 1, type: 'string'}}, required: ['id'], type: 'object'} as const
