// Sends every Segment message type through one official Node SDK to a polku server.
//
//   node send.mjs segment|rudder HOST WRITE_KEY PREFIX
//
// Message ids are PREFIX-<type> (and PREFIX-track-app for a track on the "app"
// channel), so the test knows what to look for. Prints one JSON line with the ids
// sent and the client timestamp they carry; exits non-zero if the SDK reports any
// delivery error.

import { Analytics as SegmentAnalytics } from '@segment/analytics-node'
import RudderAnalytics from '@rudderstack/rudder-sdk-node'

const [sdk, host, writeKey, prefix] = process.argv.slice(2)
if (!sdk || !host || !writeKey || !prefix) {
  console.error('usage: node send.mjs segment|rudder HOST WRITE_KEY PREFIX')
  process.exit(2)
}

const timestamp = new Date(Date.now() - 60_000)
const messages = [
  ['track', { userId: 'node-user', event: 'Order Completed', properties: { total: 42 } }],
  ['track', { userId: 'node-user', event: 'App Opened', context: { channel: 'app' } }, 'track-app'],
  ['identify', { userId: 'node-user', traits: { email: 'node@example.com' } }],
  ['page', { userId: 'node-user', name: 'Pricing', category: 'Docs', properties: { path: '/pricing' } }],
  ['screen', { anonymousId: 'node-anon', name: 'Home' }],
  ['group', { userId: 'node-user', groupId: 'node-group', traits: { plan: 'pro' } }],
  ['alias', { userId: 'node-user', previousId: 'node-anon' }],
]

const errors = []
const sent = []

function send(client, [type, params, suffix]) {
  const messageId = `${prefix}-${suffix ?? type}`
  sent.push(messageId)
  return new Promise((resolve) => {
    client[type]({ ...params, messageId, timestamp }, (error) => {
      if (error) errors.push(`${messageId}: ${error}`)
      resolve()
    })
  })
}

if (sdk === 'segment') {
  const analytics = new SegmentAnalytics({ writeKey, host, flushInterval: 200, maxRetries: 2 })
  analytics.on('error', (error) => errors.push(String(error?.reason ?? error)))
  const delivered = Promise.all(messages.map((message) => send(analytics, message)))
  await analytics.closeAndFlush({ timeout: 15_000 })
  await delivered
} else if (sdk === 'rudder') {
  // dataPlaneUrl is RudderStack's name for the host; gzip is on by default.
  const analytics = new RudderAnalytics(writeKey, {
    dataPlaneUrl: host,
    flushAt: 100,
    flushInterval: 200,
    retryCount: 2,
    logLevel: 'error',
    errorHandler: (error) => errors.push(String(error)),
  })
  const delivered = Promise.all(messages.map((message) => send(analytics, message)))
  // flush() sends at most flushAt items and the first call already started one
  // request; flush until the queue is empty.
  while (analytics.queue.length > 0) await analytics.flush()
  await analytics.flush()
  await delivered
} else {
  console.error(`unknown sdk ${sdk}`)
  process.exit(2)
}

console.log(JSON.stringify({ sent, errors, timestamp: timestamp.toISOString() }))
process.exit(errors.length ? 1 : 0)
