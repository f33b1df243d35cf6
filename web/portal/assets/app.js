// The portal's single page: #/routes render into <main>; admins get the admin pages.
import {logout, session, setSignedOutHandler} from './api.js'
import {h} from './dom.js'
import {renderAudit} from './audit.js'
import {renderCertificates} from './certificates.js'
import {renderLogin} from './login.js'
import {renderMessages} from './messages.js'
import {renderOverview} from './overview.js'
import {renderUsers} from './users.js'

const routes = {
  '#/login': {render: renderLogin, public: true},
  '#/messages': {render: renderMessages, title: 'Messages'},
  '#/admin/overview': {admin: true, render: renderOverview, title: 'Overview'},
  '#/admin/certificates': {admin: true, render: renderCertificates, title: 'Certificates'},
  '#/admin/users': {admin: true, render: renderUsers, title: 'Users'},
  '#/admin/audit': {admin: true, render: renderAudit, title: 'Audit log'},
}

// the page being shown may run timers (the live overview); they stop when it is left
let cleanup = () => {}

export function go(hash) {
  if (location.hash === hash) render()
  else location.hash = hash
}

function header(user) {
  const top = document.getElementById('top')
  const nav = document.getElementById('nav')
  top.hidden = !user
  nav.replaceChildren(
    ...Object.entries(routes)
      .filter(([, r]) => r.title && (!r.admin || user?.role === 'admin'))
      .map(([hash, r]) => h('a', {'aria-current': location.hash.startsWith(hash) ? 'page' : undefined, href: hash}, r.title)),
  )
  document.getElementById('whoami').textContent = user ? `${user.email} (${user.role}${user.client_id ? `, ${user.client_id}` : ''})` : ''
}

async function render() {
  cleanup()
  cleanup = () => {}
  const user = session.get()?.user
  const [path] = location.hash.split('?')
  const base = Object.keys(routes).find((k) => path === k || path.startsWith(`${k}/`))
  const route = routes[base]
  if (!route || (!route.public && !user)) return go(user ? '#/messages' : '#/login')
  if (route.admin && user.role !== 'admin') return go('#/messages')
  if (route.public && user) return go('#/messages')
  header(route.public ? null : user)
  const main = document.getElementById('main')
  main.replaceChildren()
  const done = await route.render(main, {go, params: path.slice(base.length + 1), user})
  if (typeof done === 'function') cleanup = done
}

setSignedOutHandler(() => go('#/login'))
document.getElementById('logout').addEventListener('click', async () => {
  await logout()
  go('#/login')
})
window.addEventListener('hashchange', render)
render()
