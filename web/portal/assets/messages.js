import {api} from './api.js'
import {fmtTime, formData, h, notice, table} from './dom.js'

const STATUSES = ['', 'queued', 'processing', 'delivered', 'failed']

/** #/messages[/ID]: the table with filters and keyset pages, and a detail view. */
export async function renderMessages(main, {go, params, user}) {
  if (params) return renderDetail(main, decodeURIComponent(params), user)
  const q = new URLSearchParams(location.hash.split('?')[1] ?? '')
  const form = h('form.filters#message-filters', {},
    h('label', {}, 'Status', h('select#filter-status', {name: 'status'}, STATUSES.map((s) => h('option', {selected: q.get('status') === s || undefined, value: s}, s || 'any')))),
    h('label', {}, 'From', h('input#filter-from', {name: 'from', type: 'date', value: q.get('from') ?? ''})),
    h('label', {}, 'To', h('input#filter-to', {name: 'to', type: 'date', value: q.get('to') ?? ''})),
    user.role === 'admin' ? h('label', {}, 'Client', h('input#filter-client', {name: 'client', placeholder: 'all', value: q.get('client') ?? ''})) : null,
    h('button', {type: 'submit'}, 'Apply'),
  )
  form.addEventListener('submit', (ev) => {
    ev.preventDefault()
    const f = Object.fromEntries(Object.entries(formData(form)).filter(([, v]) => v !== ''))
    go(`#/messages?${new URLSearchParams(f)}`)
  })
  const out = h('div#messages')
  main.append(h('h1', {}, user.role === 'admin' ? 'Messages (all clients)' : `Messages of ${user.client_id ?? '(no client)'}`), form, out)

  const params2 = new URLSearchParams()
  for (const k of ['status', 'client', 'cursor']) if (q.get(k)) params2.set(k, q.get(k))
  // dates are whole days: from the start of `from` to the end of `to`
  if (q.get('from')) params2.set('from', `${q.get('from')}T00:00:00Z`)
  if (q.get('to')) params2.set('to', new Date(Date.parse(`${q.get('to')}T00:00:00Z`) + 86_400_000).toISOString())
  params2.set('limit', '25')
  try {
    const r = await api('GET', `/portal/messages?${params2}`)
    const pageQuery = (cursor) => {
      const p = new URLSearchParams(q)
      if (cursor) p.set('cursor', cursor)
      else p.delete('cursor')
      return `#/messages?${p}`
    }
    out.replaceChildren(
      table(r.messages, [
        ['Message', (m) => h('a', {href: `#/messages/${encodeURIComponent(m.message_id)}`}, m.message_id)],
        ['Client', (m) => m.client_id],
        ['Status', (m) => h(`span.badge.${m.status}`, {}, m.status)],
        ['Sender', (m) => m.sender],
        ['Queued', (m) => fmtTime(m.queued_at)],
        ['Delivered', (m) => fmtTime(m.delivered_at)],
        ['Attempts', (m) => String(m.attempts)],
      ], (m) => ({'data-id': m.message_id})),
      h('div.pager', {},
        q.get('cursor') ? h('a.button#first-page', {href: pageQuery(null)}, 'First page') : null,
        r.next ? h('a.button#next-page', {href: pageQuery(r.next)}, 'Next page') : null,
      ),
    )
  } catch (e) {
    out.replaceChildren(notice('error', e.message))
  }
}

async function renderDetail(main, id, user) {
  main.append(h('p', {}, h('a', {href: '#/messages'}, '← Messages')))
  const box = h('div.card#message-detail')
  main.append(box)
  try {
    const m = await api('GET', `/portal/messages/${encodeURIComponent(id)}`)
    const rows = [['Message', m.message_id], ['Client', m.client_id], ['Status', m.status], ['Sender', m.sender], ['Queued', fmtTime(m.queued_at)], ['Delivered', fmtTime(m.delivered_at)], ['Last attempt', fmtTime(m.last_attempt_at)], ['Attempts', String(m.attempts)], ['Last error', m.last_error ?? '']]
    const dl = h('dl', {}, rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]))
    box.replaceChildren(h('h1', {}, 'Message'), dl)
    if (user.role === 'admin') {
      const plain = h('div#decrypted')
      const btn = h('button#decrypt', {type: 'button'}, 'Decrypt (audited)')
      btn.addEventListener('click', async () => {
        try {
          const d = await api('GET', `/admin/messages/${encodeURIComponent(id)}?decrypt=1`)
          plain.replaceChildren(h('dl', {}, h('dt', {}, 'Number'), h('dd', {}, d.sender_number), h('dt', {}, 'Body'), h('dd', {}, h('pre', {}, d.message_body))))
        } catch (e) {
          plain.replaceChildren(notice('error', e.message))
        }
      })
      box.append(btn, plain)
    }
  } catch (e) {
    box.replaceChildren(notice('error', e.message))
  }
}
