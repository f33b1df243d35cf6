import {api} from './api.js'
import {fmtTime, formData, h, notice, table} from './dom.js'

/** #/admin/users: create, delete, reset password. */
export async function renderUsers(main, {user}) {
  const status = h('div#user-status')
  const list = h('div#user-list')
  const form = h('form.card.inline#user-form', {},
    h('h2', {}, 'Create a user'),
    h('label', {}, 'E-mail', h('input#user-email', {name: 'email', required: true, type: 'email'})),
    h('label', {}, 'Password', h('input#user-password', {autocomplete: 'new-password', minlength: 8, name: 'password', required: true, type: 'password'})),
    h('label', {}, 'Role', h('select#user-role', {name: 'role'}, h('option', {value: 'user'}, 'user'), h('option', {value: 'admin'}, 'admin'))),
    h('label', {}, 'Client', h('input#user-client', {name: 'client', placeholder: 'client identity'})),
    h('button#user-submit', {type: 'submit'}, 'Create'),
  )
  const say = (kind, text) => status.replaceChildren(notice(kind, text, kind === 'error' ? 'user-error' : 'user-ok'))
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault()
    const f = formData(form)
    try {
      const u = await api('POST', '/admin/users', {email: f.email, password: f.password, role: f.role, ...(f.client ? {client: f.client} : {})})
      say('ok', `Created ${u.email}.`)
      form.reset()
      await load()
    } catch (e) {
      say('error', e.message)
    }
  })

  async function load() {
    try {
      const r = await api('GET', '/admin/users')
      list.replaceChildren(table(r.users, [
        ['E-mail', (u) => u.email],
        ['Role', (u) => u.role],
        ['Client', (u) => u.client_id ?? ''],
        ['Created', (u) => fmtTime(u.created_at)],
        ['Last login', (u) => fmtTime(u.last_login_at)],
        ['', (u) => {
          const pw = h('input.reset-password', {'aria-label': `new password for ${u.email}`, minlength: 8, placeholder: 'new password', type: 'password'})
          const reset = h('button.reset', {type: 'button'}, 'Reset password')
          reset.addEventListener('click', async () => {
            try {
              await api('POST', `/admin/users/${u.id}/password`, {password: pw.value})
              say('ok', `New password set for ${u.email}; their sessions ended.`)
              pw.value = ''
            } catch (e) {
              say('error', e.message)
            }
          })
          const del = h('button.danger.delete', {disabled: u.id === user.id || undefined, type: 'button'}, 'Delete')
          del.addEventListener('click', async () => {
            if (!confirm(`Delete ${u.email}?`)) return
            try {
              await api('DELETE', `/admin/users/${u.id}`)
              say('ok', `Deleted ${u.email}.`)
              await load()
            } catch (e) {
              say('error', e.message)
            }
          })
          return h('span.nowrap', {}, pw, reset, del)
        }],
      ], (u) => ({'data-email': u.email})))
    } catch (e) {
      list.replaceChildren(notice('error', e.message))
    }
  }
  main.append(h('h1', {}, 'Users'), form, status, list)
  await load()
}
