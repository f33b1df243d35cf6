import {login} from './api.js'
import {formData, h, notice} from './dom.js'

export function renderLogin(main, {go}) {
  const error = h('div#login-status')
  const form = h('form.card.login#login-form', {},
    h('h1', {}, 'mq portal'),
    h('label', {}, 'E-mail', h('input#email', {autocomplete: 'username', name: 'email', required: true, type: 'email'})),
    h('label', {}, 'Password', h('input#password', {autocomplete: 'current-password', name: 'password', required: true, type: 'password'})),
    h('button#login-submit', {type: 'submit'}, 'Log in'),
    error,
  )
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault()
    const {email, password} = formData(form)
    error.replaceChildren()
    try {
      await login(email, password)
      go('#/messages')
    } catch (e) {
      error.replaceChildren(notice('error', e.message, 'login-error'))
    }
  })
  main.append(form)
}
