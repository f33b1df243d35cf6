import {api} from './api.js'
import {h, notice, svg, table} from './dom.js'

const EVERY_MS = 3000
const KEEP = 60

/** A small line chart (inline SVG, no library) of the last values, scaled to their maximum. */
export function sparkline(values, {width = 160, height = 36, label = ''} = {}) {
  const max = Math.max(1, ...values)
  const step = values.length > 1 ? width / (KEEP - 1) : 0
  const x0 = width - step * (values.length - 1)
  const pts = values.map((v, i) => `${(x0 + i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`).join(' ')
  return svg('svg', {'aria-label': label, class: 'spark', height, role: 'img', viewBox: `0 0 ${width} ${height}`, width},
    svg('line', {class: 'axis', x1: 0, x2: width, y1: height - 1, y2: height - 1}),
    svg('polyline', {class: 'line', fill: 'none', points: pts}),
  )
}

/** #/admin/overview: queues with depth and rates, connections, dead letters; refreshed every few seconds. */
export async function renderOverview(main) {
  const cards = h('div.cards#overview-cards')
  const charts = h('div.cards#overview-charts')
  const queues = h('div#overview-queues')
  const status = h('div#overview-status')
  const stamp = h('span.muted#overview-updated')
  main.append(h('h1', {}, 'Overview ', stamp), status, cards, charts, h('h2', {}, 'Queues'), queues)
  const history = {depth: [], publish: [], deliver: [], perQueue: new Map()}
  const push = (arr, v) => {
    arr.push(v)
    if (arr.length > KEEP) arr.shift()
  }
  const card = (title, value, id) => h('div.card.stat', {id}, h('div.muted', {}, title), h('div.big', {}, String(value)))

  async function tick() {
    let records
    try {
      records = await api('GET', '/admin/stats')
    } catch {}
    try {
      const {at, broker} = await api('GET', '/admin/overview')
      const dlqNames = new Set(broker.queues.map((q) => q.deadLetter).filter(Boolean))
      const isDlq = (q) => dlqNames.has(q.name) || /(^|[._-])(dlq|dead)/i.test(q.name)
      const depth = broker.queues.reduce((n, q) => n + q.messages, 0)
      const dead = broker.queues.filter(isDlq).reduce((n, q) => n + q.messages, 0)
      push(history.depth, depth)
      push(history.publish, broker.rates.publish)
      push(history.deliver, broker.rates.deliver)
      for (const q of broker.queues) {
        if (!history.perQueue.has(q.name)) history.perQueue.set(q.name, [])
        push(history.perQueue.get(q.name), q.messages)
      }
      status.replaceChildren()
      cards.replaceChildren(
        card('Connections', broker.connections, 'stat-connections'),
        card('Queues', broker.queues.length, 'stat-queues'),
        card('Messages ready', depth, 'stat-depth'),
        card('Dead letters', dead, 'stat-dead'),
        card('Publish /s', broker.rates.publish, 'stat-publish'),
        card('Deliver /s', broker.rates.deliver, 'stat-deliver'),
        ...(records ? [card('Records failed', records.messages.failed, 'stat-failed'), card('Records (24 h)', records.messages.last_24h, 'stat-24h')] : []),
      )
      charts.replaceChildren(
        h('div.card', {}, h('div.muted', {}, 'Queue depth'), sparkline(history.depth, {label: 'queue depth', width: 240})),
        h('div.card', {}, h('div.muted', {}, 'Publish rate'), sparkline(history.publish, {label: 'publish rate', width: 240})),
        h('div.card', {}, h('div.muted', {}, 'Deliver rate'), sparkline(history.deliver, {label: 'deliver rate', width: 240})),
      )
      queues.replaceChildren(table(broker.queues, [
        ['Queue', (q) => (isDlq(q) ? h('span', {}, q.name, ' ', h('span.badge.failed', {}, 'dead letters')) : q.name)],
        ['Ready', (q) => String(q.messages)],
        ['Unacked', (q) => String(q.unacked)],
        ['Consumers', (q) => String(q.consumers)],
        ['Publish /s', (q) => String(q.publishRate)],
        ['Deliver /s', (q) => String(q.deliverRate)],
        ['Ack /s', (q) => String(q.ackRate)],
        ['Depth', (q) => sparkline(history.perQueue.get(q.name) ?? [], {label: `depth of ${q.name}`})],
      ], (q) => ({'data-queue': q.name})))
      stamp.textContent = `updated ${new Date(at).toLocaleTimeString()}`
    } catch (e) {
      status.replaceChildren(notice('error', e.message, 'overview-error'))
    }
  }
  await tick()
  const timer = setInterval(tick, EVERY_MS)
  return () => clearInterval(timer)
}
