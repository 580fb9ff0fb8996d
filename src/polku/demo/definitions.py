"""What the demo deploys: the workspace configuration (channels to the demo's own
inbox, attributes, segments, the contact policy, survey fatigue), journeys and
surveys — the documents a real company would write (docs/demo.md)."""

from __future__ import annotations

from typing import Final


def config(inbox_url: str, public_url: str) -> str:
    return f"""
channels:
  email: {{type: webhook, url: "{inbox_url}/email", channel: email, allow_private_network: true}}
  sms: {{type: webhook, url: "{inbox_url}/sms", channel: sms, allow_private_network: true}}
attributes:
  orders_30d: {{kind: count, event: Order Completed, window: 30d}}
  lowest_csat_14d: {{kind: min, event: Feedback Submitted, property: score, where: "properties.metric == 'csat'", window: 14d}}
  shopping_for: {{kind: most_frequent, event: Product Viewed, property: product, window: 7d}}
  reset_failures_1d: {{kind: count, event: Password Reset Failed, window: 1d}}
segments:
  buyers: {{condition: "attributes.orders_30d >= 1"}}
  recently_unhappy: {{condition: "attributes.lowest_csat_14d != null and attributes.lowest_csat_14d <= 2"}}
policy:
  caps:
    - {{name: marketing-weekly, max: 2, per: 7d, purposes: [marketing]}}
    - {{name: account-weekly, max: 6, per: 7d, purposes: [marketing], scope: account}}
  quiet_hours: {{start: "21:00", end: "08:00", purposes: [marketing, surveys]}}
  suppress:
    - {{name: recently-unhappy, when: "'recently_unhappy' in segments", purposes: [marketing, surveys]}}
  default_timezone: Europe/Helsinki
surveys:
  base_url: {public_url}
  fatigue: {{after_invitation: 14d, after_response: 30d, account: {{max: 5, per: 30d}}}}
"""


JOURNEYS: Final = (
    """
id: password-help
name: Help after a failed password reset
entry: {event: Password Reset Failed, when: "event.channel == 'app'", reentry: after 1d}
goal: {event: Password Reset Succeeded, within: 2d}
holdout: 0.1
steps:
  - id: wait-for-call
    wait_for: {event: Call Started, within: 2h, on_event: note, on_timeout: help}
  - id: note
    action:
      channel: agent_note
      body: "Tried to reset the password in the app; it failed ({{ trigger.properties.reason }}). Send a new link."
    next: end
  - id: help
    action:
      channel: email
      to: traits.email   # the demo's email channel is a webhook, whose default recipient is the phone
      subject: "Trouble signing in?"
      body: "Hi {{ traits.first_name }}, here is a fresh link to reset your password."
""",
    """
id: cart-reminder
name: Cart left at delivery options
entry: {event: Delivery Options Viewed, reentry: after 7d}
goal: {event: Order Completed, within: 3d}
holdout: 0.2
steps:
  - id: wait
    wait_for: {event: Order Completed, within: 1h, on_event: end, on_timeout: split}
  - id: split
    split: [{name: prices, share: 1, next: prices}, {name: reminder, share: 1, next: reminder}]
  - id: prices
    action: {channel: email, to: traits.email, purpose: marketing, subject: "Delivery is free over 100 EUR", body: "Hi {{ traits.first_name }}, delivery prices explained."}
    next: end
  - id: reminder
    action: {channel: email, to: traits.email, purpose: marketing, subject: "Still thinking?", body: "Your cart is waiting, {{ traits.first_name }}."}
""",
    """
id: payment-rescue
name: Chat note after a failed payment
entry: {event: Payment Failed}
steps:
  - id: note
    action: {channel: agent_note, body: "Payment failed at checkout ({{ trigger.properties.reason }}); offer invoice."}
""",
)

SURVEYS: Final = (
    """
id: order-nps
name: How likely are you to recommend us?
metric: nps
question:
  en: "How likely are you to recommend us to a friend or colleague?"
  fi: "Kuinka todennäköisesti suosittelisit meitä ystävälle tai kollegalle?"
  sv: "Hur troligt är det att du skulle rekommendera oss till en vän eller kollega?"
questions:
  - id: reason
    type: choice
    text: {en: "What mattered most?", fi: "Mikä oli tärkeintä?", sv: "Vad var viktigast?"}
    options:
      - {value: price, text: {en: Price, fi: Hinta, sv: Pris}}
      - {value: delivery, text: {en: Delivery, fi: Toimitus, sv: Leverans}}
      - {value: service, text: {en: Service, fi: Palvelu, sv: Service}}
  - id: more
    type: text
    text: {en: "Anything else?", fi: "Muuta kerrottavaa?", sv: "Något annat?"}
channels: [email, in_app]
triggers: [{event: Order Completed, delay: 1m}]
sample: 0.5
""",
    """
id: reset-ces
name: Was it easy?
metric: ces
question:
  en: "How easy was it to get back into your account?"
  fi: "Kuinka helppoa oli päästä takaisin tilillesi?"
  sv: "Hur lätt var det att komma tillbaka till ditt konto?"
channels: [in_app]
triggers: [{event: Password Reset Succeeded}]
""",
)


ACTIONS: Final = """
holdout: 0.1
default_action: help-center
in_app_value: 8
actions:
  - id: reset-self-service
    name: Reset your password yourself
    channels: [chat, app, web]
    self_service: true
    value: 5
    context: {intent: {login_problem: 3, "*": 0}}
    treatments:
      chat: {text: "Hi {{ traits.first_name }}, here is a fresh reset link that works in the app: https://example.com/reset"}
      "*": {title: "Trouble signing in?", url: "https://example.com/reset"}
    suppress: {rejected: 3, within: 30d, for: 14d}
  - id: invoice-payment
    name: Pay by invoice instead
    channels: [chat, web]
    self_service: true
    value: 4
    context: {intent: {payment_problem: 3, "*": 0}}
    treatments: {"*": {text: "Your card did not go through? You can pay by invoice: https://example.com/invoice"}}
  - id: delivery-prices
    name: Delivery prices explained
    channels: [web, app]
    when: "attributes.orders_30d == 0"
    value: 3
    context: {page: {"Shipping Prices": 3, Offers: 1.5}}
    treatments: {"*": {title: "Free delivery over 100 EUR", url: "https://example.com/delivery"}}
  - id: premium-offer
    name: Business plan
    channels: [web, app, email]
    purpose: marketing
    when: "account != null"
    value: 20
    lever: 0.5
    treatments: {"*": {title: "Business plan for {{ account.name }}", url: "https://example.com/business"}}
  - id: help-center
    channels: [web, app, chat]
    value: 0.5
    treatments: {"*": {text: "Our help center: https://example.com/help"}}
handover:
  - {name: repeated_failure, when: "attributes.reset_failures_1d >= 2"}
  - {name: recently_unhappy, when: "'recently_unhappy' in segments"}
  - {name: asked_for_human, when: "context.ask_human == true"}
"""
