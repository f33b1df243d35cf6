import {api} from './api.js'
import {download, fmtTime, formData, h, notice, table} from './dom.js'

const REASONS = ['unspecified', 'key-compromise', 'affiliation-changed', 'superseded', 'cessation-of-operation']

/** #/admin/certificates: the CA's inventory with expiry, filters, issue with download, revoke. */
export async function renderCertificates(main) {
  const status = h('div#cert-status')
  const bundle = h('div#cert-bundle')
  const list = h('div#cert-list')
  const filter = h('select#cert-filter', {}, ['', 'active', 'revoked', 'expired'].map((s) => h('option', {value: s}, s || 'any status')))
  const typeFilter = h('select#cert-type-filter', {}, ['', 'client', 'server', 'ca', 'e2e-enc', 'e2e-sign'].map((s) => h('option', {value: s}, s || 'any type')))

  const issue = h('form.card.inline#issue-form', {},
    h('h2', {}, 'Issue a certificate'),
    h('label', {}, 'Name (CN)', h('input#issue-name', {name: 'name', pattern: '[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}', required: true})),
    h('label', {}, 'Type', h('select#issue-type', {name: 'type'}, h('option', {value: 'client'}, 'client'), h('option', {value: 'server'}, 'server'))),
    h('label', {}, 'Days', h('input#issue-days', {max: 36500, min: 1, name: 'days', placeholder: 'default', type: 'number'})),
    h('button#issue-submit', {type: 'submit'}, 'Issue'),
  )
  issue.addEventListener('submit', async (ev) => {
    ev.preventDefault()
    const f = formData(issue)
    status.replaceChildren()
    try {
      const b = await api('POST', '/admin/certificates/generate', {name: f.name, type: f.type, ...(f.days ? {days: Number(f.days)} : {})})
      showBundle(b)
      issue.reset()
      await load()
    } catch (e) {
      status.replaceChildren(notice('error', e.message, 'cert-error'))
    }
  })

  function showBundle(b) {
    const name = b.certificate.name
    const all = `${b.cert_pem}${b.key_pem}`
    bundle.replaceChildren(h('div.card.warn', {},
      h('h2', {}, `Issued ${name} (serial ${b.certificate.serial})`),
      h('p', {}, 'The private key is shown only now: the server does not keep it. Download it before leaving this page.'),
      h('button#download-bundle', {onclick: () => download(`${name}-bundle.pem`, all + b.ca_pem), type: 'button'}, 'Download bundle (cert + key + CA)'),
      h('button#download-cert', {onclick: () => download(`${name}.crt`, b.cert_pem), type: 'button'}, 'Certificate'),
      h('button#download-key', {onclick: () => download(`${name}.key`, b.key_pem), type: 'button'}, 'Private key'),
      h('button#download-ca', {onclick: () => download('ca.crt', b.ca_pem), type: 'button'}, 'CA certificate'),
      h('button', {onclick: () => bundle.replaceChildren(), type: 'button'}, 'Done'),
    ))
  }

  async function revoke(c, reason) {
    status.replaceChildren()
    try {
      await api('POST', '/admin/certificates/revoke', {name: c.serial, reason})
      status.replaceChildren(notice('ok', `Revoked ${c.name} (${reason}); the CRL was republished.`, 'cert-ok'))
      await load()
    } catch (e) {
      status.replaceChildren(notice('error', e.message, 'cert-error'))
    }
  }

  async function load() {
    const p = new URLSearchParams()
    if (filter.value) p.set('status', filter.value)
    if (typeFilter.value) p.set('type', typeFilter.value)
    try {
      const r = await api('GET', `/admin/certificates?${p}`)
      list.replaceChildren(table(r.certificates, [
        ['Name', (c) => c.name],
        ['Type', (c) => c.type],
        ['Serial', (c) => h('code', {}, c.serial.slice(0, 16))],
        ['Status', (c) => h(`span.badge.${c.status}`, {}, c.status)],
        ['Expires', (c) => fmtTime(c.not_after)],
        ['Days left', (c) => h(c.status === 'active' && c.days_left < 14 ? 'strong.soon' : 'span', {}, String(c.days_left))],
        ['Revoked', (c) => (c.revoked_at ? `${fmtTime(c.revoked_at)} (${c.reason})` : '')],
        ['', (c) => {
          if (c.status !== 'active' || !['client', 'server'].includes(c.type)) return ''
          const reason = h('select', {'aria-label': `reason for ${c.name}`, class: 'revoke-reason'}, REASONS.map((x) => h('option', {value: x}, x)))
          return h('span.nowrap', {}, reason, h('button.danger.revoke', {onclick: () => revoke(c, reason.value), type: 'button'}, 'Revoke'))
        }],
      ], (c) => ({'data-name': c.name, 'data-status': c.status})))
    } catch (e) {
      list.replaceChildren(notice('error', e.message))
    }
  }
  filter.addEventListener('change', load)
  typeFilter.addEventListener('change', load)
  main.append(h('h1', {}, 'Certificates'), issue, bundle, status, h('div.filters', {}, filter, typeFilter), list)
  await load()
}
