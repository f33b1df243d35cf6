// Tiny DOM helpers: every text goes in through textContent, never innerHTML, so data cannot become markup.

/** h('tag.class#id', {attr: value, onclick: fn}, ...children) */
export function h(spec, attrs = {}, ...children) {
  const [tagAndClasses, id] = spec.split('#')
  const [tag, ...classes] = tagAndClasses.split('.')
  const el = document.createElement(tag || 'div')
  if (id) el.id = id
  if (classes.length) el.className = classes.join(' ')
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v)
    else if (k === 'value') el.value = v
    else el.setAttribute(k, v === true ? '' : String(v))
  }
  for (const c of children.flat()) if (c !== undefined && c !== null && c !== false) el.append(c instanceof Node ? c : document.createTextNode(String(c)))
  return el
}

export const svgNs = 'http://www.w3.org/2000/svg'

export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(svgNs, tag)
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v))
  for (const c of children) el.append(c)
  return el
}

export function fmtTime(iso) {
  if (!iso) return ''
  const d = new Date(iso)
  return d.toISOString().replace('T', ' ').slice(0, 19)
}

/** A table from rows and [header, (row) => cell] columns; rowAttrs(row) adds attributes to each <tr>. */
export function table(rows, columns, rowAttrs = () => ({})) {
  return h('table', {},
    h('thead', {}, h('tr', {}, columns.map(([head]) => h('th', {}, head)))),
    h('tbody', {}, rows.length === 0 ? h('tr', {}, h('td.muted', {colspan: columns.length}, 'Nothing to show.')) : rows.map((r) => h('tr', rowAttrs(r), columns.map(([, cell]) => h('td', {}, cell(r)))))),
  )
}

/** A status line that tells the user what happened (role=status for screen readers). */
export function notice(kind, text, id) {
  return h(`p.notice.${kind}`, {id, role: kind === 'error' ? 'alert' : 'status'}, text)
}

/** Offers text as a file download (the browser saves it; nothing leaves this page). */
export function download(name, text, type = 'application/x-pem-file') {
  const url = URL.createObjectURL(new Blob([text], {type}))
  const a = h('a', {download: name, href: url})
  document.body.append(a)
  a.click()
  a.remove()
  setTimeout(() => URL.revokeObjectURL(url), 10_000)
}

export function formData(form) {
  return Object.fromEntries(new FormData(form).entries())
}
