import {api} from './api.js'
import {fmtTime, h, notice, table} from './dom.js'

/** #/admin/audit: who did what, when, from where (newest first, pages of 50). */
export async function renderAudit(main) {
  const list = h('div#audit-list')
  const type = h('input#audit-type', {placeholder: 'event type, e.g. cert.issue'})
  const more = h('button#audit-more', {hidden: true, type: 'button'}, 'Older')
  let before = null
  let rows = []
  async function load(reset) {
    if (reset) (before = null), (rows = [])
    const p = new URLSearchParams({limit: '50'})
    if (type.value) p.set('type', type.value)
    if (before) p.set('before', String(before))
    try {
      const r = await api('GET', `/admin/audit?${p}`)
      rows = rows.concat(r.events)
      before = r.next
      more.hidden = !r.next
      list.replaceChildren(table(rows, [
        ['When', (e) => fmtTime(e.created_at)],
        ['What', (e) => h(`span.sev.${e.severity}`, {}, e.event_type)],
        ['Who', (e) => e.actor ?? ''],
        ['Subject', (e) => e.identity ?? ''],
        ['From', (e) => e.ip ?? ''],
        ['Details', (e) => h('code', {}, e.event_data ?? '')],
      ], (e) => ({'data-type': e.event_type})))
    } catch (e) {
      list.replaceChildren(notice('error', e.message))
    }
  }
  type.addEventListener('change', () => load(true))
  more.addEventListener('click', () => load(false))
  main.append(h('h1', {}, 'Audit log'), h('div.filters', {}, type), list, more)
  await load(true)
}
