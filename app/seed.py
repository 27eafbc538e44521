"""Demo data: a believable software company's roadmap (`ahead seed --demo`).

The demo company is Rotawise, which sells staff scheduling and time tracking to clinics, shops and
restaurants. Everything is written through the real services, so the search index, the stage
history and the audit log agree with the items. The history is then moved into the past (the last
year) so that the board, the item timelines, the changelog and the audit log tell one story.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from app.accounts import passwords
from app.accounts import service as accounts
from app.accounts.models import Role, User
from app.accounts.viewer import Viewer
from app.changelog import service as changelog
from app.config import get_settings
from app.db import utcnow
from app.desk import decisions
from app.desk import service as desk
from app.discussion import service as discussion
from app.discussion.models import CommentReport
from app.errors import FormInvalid
from app.feedback import service as feedback
from app.forms import validate_form
from app.organisations import service as organisations
from app.organisations.models import Organisation, Segment
from app.portal import service as portal
from app.roadmap import service as roadmap
from app.roadmap.models import Confidence, Item, Stage, Visibility
from app.roadmap.timeframes import Timeframe, current_quarter, quarter_choices
from app.tech import service as tech
from app.tech import trackers
from app.tech.models import HookKind, InitiativeStatus
from app.voting import service as voting
from app.voting.models import CaptureSource, Follow, Importance, Vote

# Printed in the summary and documented in the README: demo staff sign in with it.
DEMO_PASSWORD = "ahead-demo-password"  # nosec B105 # demo only; production demo staff get no password
ADMIN_EMAIL = "admin@example.com"
PM_EMAIL = "pm@example.com"
COMPANY = "Rotawise"
SETUP_DAYS_AGO = 380

PRODUCTS = {
    "web": ("Rotawise Web", ("The scheduling workspace where managers build rotas, approve time off and "
                             "export hours to payroll.")),
    "mobile": ("Rotawise Mobile", ("The iOS and Android app where staff see their shifts, swap them, request "
                                   "time off and clock in.")),
}
TAGS = ("Integrations", "Reporting", "Security", "Notifications", "Performance", "Accessibility", "Admin",
        "API", "Time tracking")
BRANDING = {
    "portal_name": "Rotawise Roadmap",
    "accent_color": "#0f766e",
    "product_name": "Rotawise",
    # .example is reserved (RFC 2606): the demo must not link to somebody's real company.
    "product_url": "https://www.rotawise.example",
}


@dataclass(frozen=True, slots=True)
class DemoItem:
    product: str
    title: str
    summary: str
    description: str
    # (stage slug, days ago), oldest first: the item is created in the first stage, then moved.
    history: tuple[tuple[str, int], ...]
    tags: tuple[str, ...] = ()
    # "now" | "next" | "later" | "q+N" (N quarters after the current one);
    # "" means: released items get the quarter they shipped in, the others Later.
    timeframe: str = ""
    confidence: Confidence | None = None
    # Placeholder counts for the board's look (see _set_vote_count).
    votes: int = 0
    visibility: Visibility = Visibility.public
    # With visibility `customers`: the segments (names in SEGMENTS) it is limited to; none means all customers.
    segments: tuple[str, ...] = ()
    draft: bool = False
    internal_notes: str = ""
    release_notes: str = ""


UC, PLANNED, IN_PROGRESS, RELEASED, DECLINED = "under-consideration", "planned", "in-progress", "released", "declined"

ITEMS: tuple[DemoItem, ...] = (
    # --- released ---------------------------------------------------------------------------------------
    DemoItem(
        "web", "Payroll export to Gusto and ADP",
        "Send approved hours straight to Gusto or ADP — no more CSV juggling on payday.",
        """Approved timesheets can be sent to your payroll provider with one click at the end of each pay period.

**What is included**

- Connect Gusto or ADP Workforce Now from *Settings → Integrations* (OAuth, no API keys to copy).
- Map Rotawise pay rules (regular, overtime, night premium, holiday) to the earning codes your payroll uses.
- Preview every employee's hours before sending, with warnings for unapproved or overlapping shifts.
- Re-send a corrected period; Rotawise keeps a history of every export.

Hours stay editable in Rotawise until you send them. After that, a correction creates a new export
instead of silently changing the old one, so your payroll provider and Rotawise always agree.""",
        ((UC, 340), (PLANNED, 290), (IN_PROGRESS, 220), (RELEASED, 170)),
        tags=("Integrations",), votes=128,
        internal_notes="Gusto partnership signed in January. The ADP marketplace listing must be re-certified "
                       "every 12 months (owner: Dana).",
        release_notes="""Payroll export is live on every plan with the Integrations add-on.

- Connect **Gusto** or **ADP Workforce Now** under *Settings → Integrations*.
- Map pay rules to earning codes once; Rotawise remembers them per location.
- Every export is listed under *Payroll → History*, with who sent it and when.

Using another provider? Xero and QuickBooks are next on the roadmap.""",
    ),
    DemoItem(
        "mobile", "Clock in from your phone, with geofencing",
        "Staff clock in from the app — and only when they are actually at work.",
        """Staff can clock in and out from the mobile app instead of a shared tablet by the door.

- Each location gets a geofence: a radius around its address that you can adjust on a map.
- Clocking in outside the geofence is blocked, or allowed with a note, depending on your policy.
- Managers see early, late and missed clock-ins on the day view as they happen.

Location is read only at the moment someone clocks in or out. Rotawise never tracks staff in the background.""",
        ((UC, 300), (PLANNED, 250), (IN_PROGRESS, 185), (RELEASED, 130)),
        tags=("Time tracking",), votes=96,
        release_notes="""Clock in and out from the Rotawise app on iOS and Android.

- Set a geofence per location under *Locations → Clock-in rules*.
- Choose whether clocking in outside the fence is **blocked** or **allowed with a note**.
- Location is only read at the moment someone clocks in or out.

Update the app to version 4.2 or later to see the new *Clock in* button.""",
    ),
    DemoItem(
        "web", "Labour cost vs. sales report",
        "Labour cost as a share of sales, by day, location and role.",
        """Labour is the largest cost most of our customers control. This report puts it next to revenue so
you can spot over-staffed days before they happen.

- Import daily sales from Square, Lightspeed or a CSV upload.
- Labour cost is calculated from scheduled shifts (forecast) and from clocked hours (actual).
- Break it down by location, role and hour of day, and compare weeks side by side.
- Set a target percentage per location and get a warning while scheduling when a day goes over it.""",
        ((UC, 280), (PLANNED, 200), (IN_PROGRESS, 140), (RELEASED, 95)),
        tags=("Reporting",), votes=74,
        release_notes="""The new **Labour cost** report is under *Reports*.

- Compare scheduled and actual labour cost with sales, per day, location and role.
- Set a target labour percentage per location; days over target are highlighted on the schedule.
- Sales can come from Square, Lightspeed or a CSV upload.""",
    ),
    DemoItem(
        "web", "SAML single sign-on (Okta, Microsoft Entra ID)",
        "Sign in with your company's identity provider and switch off passwords.",
        """Organisations on the Business plan can require single sign-on through SAML 2.0.

- Tested with Okta, Microsoft Entra ID, Google Workspace and OneLogin.
- Just-in-time provisioning: people who sign in for the first time get an account at the right location.
- Optionally disable password sign-in for everyone except a break-glass admin.

SCIM provisioning is a separate item and not part of this release.""",
        ((PLANNED, 230), (IN_PROGRESS, 120), (RELEASED, 63)),
        tags=("Security", "Admin"), votes=57,
        internal_notes="Was blocking three enterprise deals (Meridian Health, Copperleaf Hotels, Parkside "
                       "Pharmacy). External security review passed.",
        release_notes="""SAML single sign-on is available on the Business plan.

- Set it up under *Settings → Security → Single sign-on*; our guides cover Okta, Entra ID and Google Workspace.
- New users are created on their first sign-in, at the location you choose.
- Turn off password sign-in once SSO works for everyone.""",
    ),
    DemoItem(
        "mobile", "Dark mode in the mobile app",
        "Follows your phone's setting — easier on the eyes on a night shift.",
        """Many of our users check their shifts at 5 a.m. or after a late close, so the app now has a dark theme.

- Follows the system setting on iOS and Android, or set it by hand under *Profile → Appearance*.
- Every screen was checked for WCAG AA contrast in both themes.
- Shift colours chosen by managers are adjusted automatically so they stay readable on dark backgrounds.""",
        ((UC, 190), (PLANNED, 120), (IN_PROGRESS, 70), (RELEASED, 35)),
        tags=("Accessibility",), votes=41,
        release_notes="""Dark mode has arrived in the Rotawise app (iOS and Android, version 4.5).

- It follows your phone's setting; override it under *Profile → Appearance*.
- Shift colours are adjusted so they stay readable in both themes.""",
    ),
    DemoItem(
        "web", "Shift templates for recurring weeks",
        "Save a typical week and build next month's rota in a few clicks.",
        """Most rotas repeat with small changes. Templates let you save the shape of a week and apply it again.

- Save any week (or a single day) as a template, with roles, times and optionally the people assigned.
- Apply a template to one week or a range of weeks; existing shifts are kept unless you choose to replace them.
- Time off and availability are checked as the template is applied, with a list of conflicts to resolve.
- Templates are shared between the managers of a location.""",
        ((UC, 150), (PLANNED, 90), (IN_PROGRESS, 45), (RELEASED, 12)),
        tags=("Admin",), votes=83,
        release_notes="""Build rotas faster with **shift templates**.

- *Save as template* from any week or day in the schedule.
- *Apply template* fills one or more weeks and lists every conflict with time off or availability.
- Templates are shared with the other managers of your location.""",
    ),
    # --- in progress --------------------------------------------------------------------------------------
    DemoItem(
        "web", "Open shifts that qualified staff can claim",
        "Post an unfilled shift; anyone qualified can pick it up from their phone.",
        """When someone calls in sick, managers today ring round or post in a group chat. Open shifts move
that into Rotawise.

- Mark any shift as *open*: Rotawise notifies the staff who have the right role, are available and
  would not go into overtime.
- Choose per location whether the first person to claim it gets it, or a manager approves.
- See who was notified, who looked at it and who claimed it.

### Not in the first version

- Sharing open shifts across locations (this comes with multi-location rotas).
- Bonus pay for hard-to-fill shifts.""",
        ((UC, 240), (PLANNED, 150), (IN_PROGRESS, 40)),
        tags=("Notifications",), timeframe="now", votes=112,
        internal_notes="Beta with 12 customers since October: 71% of open shifts claimed within 2 hours. "
                       "Watch the notification volume at large locations.",
    ),
    DemoItem(
        "mobile", "Swap shifts from the mobile app",
        "Offer a shift, find a colleague to take it and get it approved in the app.",
        """Shift swaps are the most requested feature on this board. Today only a manager can swap shifts,
and only on the web.

**How it will work**

1. Open your shift in the app and tap *Offer swap* (or *Give away*).
2. Colleagues who can work it are notified and can accept.
3. Your manager approves with one tap, unless the location allows automatic approval.

Swaps respect availability, time off, maximum hours and the skills a shift requires. The history of
every swap stays on the shift.""",
        ((UC, 260), (PLANNED, 110), (IN_PROGRESS, 25)),
        tags=("Notifications",), timeframe="now", votes=139,
    ),
    DemoItem(
        "web", "Schedules for 1,000+ staff load in under a second",
        "Large rotas open and scroll without lag.",
        """Customers with many locations told us the week view takes several seconds to open and stutters
while scrolling.

- Only the visible part of the grid is drawn; the rest loads as you scroll.
- Shift changes are saved in the background and no longer reload the whole week.
- Our target: the week view for 1,000 people opens in under a second on a typical laptop.

You don't need to change anything: the new grid will be switched on location by location.""",
        ((PLANNED, 75), (IN_PROGRESS, 18)),
        tags=("Performance",), timeframe="q+0", confidence=Confidence.high, votes=38,
        internal_notes="p95 week-view load for Copperleaf Hotels (1,340 staff) is 6.8 s today. "
                       "Feature flag: `grid_v2`.",
    ),
    DemoItem(
        "web", "Public REST API v2 with OAuth apps",
        "A versioned API for shifts, people, time off and timesheets, with OAuth apps.",
        """The current API grew one endpoint at a time. Version 2 is designed as a whole.

- Resources: people, locations, roles, shifts, open shifts, time off and timesheets.
- OAuth 2.0 apps with scopes, so an integration only gets the access it needs.
- Cursor pagination, consistent errors and an OpenAPI description you can generate clients from.
- Webhooks for shift and timesheet changes.

API v1 keeps working for at least 12 months after v2 is released.""",
        ((UC, 200), (PLANNED, 100), (IN_PROGRESS, 30)),
        tags=("API", "Integrations"), timeframe="q+1", confidence=Confidence.medium, votes=45,
    ),
    DemoItem(
        "web", "Screen reader and keyboard support for the schedule grid",
        "Read and edit the whole rota with a screen reader or a keyboard alone.",
        """The schedule grid is the heart of Rotawise, and today it only works well with a mouse.

- Every cell is reachable with the keyboard, with shortcuts to move by day and by person.
- Screen readers announce the person, the day, the shift times and any warnings.
- Creating, moving and deleting shifts works without drag and drop.
- Tested with NVDA, JAWS and VoiceOver.

This is part of our commitment to WCAG 2.1 AA across the product.""",
        ((PLANNED, 60), (IN_PROGRESS, 9)),
        tags=("Accessibility",), timeframe="now", votes=19,
        internal_notes="Raised in the August accessibility audit. Two public-sector prospects require a VPAT.",
    ),
    # --- planned ------------------------------------------------------------------------------------------
    DemoItem(
        "web", "Time-off balances and accrual policies",
        "Leave balances that accrue automatically, per country and contract.",
        """Rotawise records time-off requests but not how much leave people have left, so many teams keep a
spreadsheet on the side.

- Define policies: a fixed allowance per year, or accrual per hour worked; carry-over rules and caps.
- Staff see their balance before they request time off.
- Managers see balances when approving, and a warning when a request would go negative.
- Import opening balances from a CSV.""",
        ((UC, 160), (PLANNED, 50)),
        tags=("Admin",), timeframe="q+1", confidence=Confidence.medium, votes=87,
    ),
    DemoItem(
        "mobile", "Clock in without mobile signal",
        "Clock in where there is no signal; the app syncs when it reconnects.",
        """Kitchens, cold stores and hospital basements often have no signal, so clocking in fails.

- The app records the clock-in with the phone's time and location and shows it as *waiting to sync*.
- When the phone reconnects, the entry is uploaded and checked against the geofence as usual.
- Managers can see which entries were made offline.""",
        ((UC, 120), (PLANNED, 22)),
        tags=("Time tracking",), timeframe="q+1", confidence=Confidence.high, votes=64,
    ),
    DemoItem(
        "web", "Overtime and rest-period warnings before you publish",
        "Spot overtime and broken rest rules while you build the rota, not on payday.",
        """Publishing a rota should never be the moment you find out it is expensive or breaks the rules.

- Warnings on the schedule for weekly overtime, daily limits and minimum rest between shifts.
- Rules per location, with presets for common regulations (EU Working Time Directive, California daily overtime).
- A summary before publishing lists every warning and lets you publish anyway, with a reason.""",
        ((UC, 90), (PLANNED, 14)),
        tags=("Notifications",), timeframe="next", votes=71,
    ),
    DemoItem(
        "web", "Multi-location rotas with shared staff",
        "Schedule people who work at several sites, with costs kept per location.",
        """Groups with several sites share staff between them, which today means one person needs two accounts.

- One person can belong to several locations, with a home location.
- Shifts at any location count towards the same weekly hours and overtime.
- Labour cost is reported at the location where the shift was worked.
- Area managers get a view across all the locations they look after.""",
        ((UC, 220), (PLANNED, 40)),
        tags=("Admin",), timeframe="q+2", confidence=Confidence.medium, votes=102,
        internal_notes="Needs the permissions rework first (see Custom roles). Largest ask from multi-site "
                       "dental groups.",
    ),
    DemoItem(
        "web", "Xero and QuickBooks payroll export",
        "Send approved hours to Xero Payroll or QuickBooks Payroll.",
        """After Gusto and ADP, these are the payroll providers our customers ask for most, especially in the
UK, Australia and New Zealand.

- The same flow as the existing exports: map pay rules to pay items once, preview, send.
- Xero Payroll for the UK, Australia and New Zealand; QuickBooks Online Payroll for the US.
- Exports appear in *Payroll → History* next to the others.""",
        ((UC, 175), (PLANNED, 66)),
        tags=("Integrations",), timeframe="next", votes=53,
    ),
    DemoItem(
        "mobile", "Choose which notifications you get",
        "Pick which push notifications you get, and set quiet hours.",
        """Staff get a push notification for everything today, which makes some of them switch notifications
off entirely and miss important changes.

- A setting per type: rota published, shift changed, open shift available, swap request, reminders.
- Quiet hours, except for changes to a shift that starts within the next 12 hours.
- Managers can mark a notification type as required for their location.""",
        ((PLANNED, 30),),
        tags=("Notifications",), timeframe="q+1", confidence=Confidence.low, votes=29,
    ),
    DemoItem(
        "web", "Custom roles and permissions",
        "Roles such as shift lead or payroll clerk, with exactly the permissions they need.",
        """Rotawise has three fixed roles today. Larger customers need finer control.

- Create roles and pick their permissions: edit schedules, approve time off, see pay rates, run exports,
  manage people.
- Limit a role to some locations or departments.
- Every permission change is recorded in the audit log.

Available on the Business plan first. We are going through the permission list with Business customers
before we build it.""",
        ((UC, 130), (PLANNED, 20)),
        tags=("Admin", "Security"), timeframe="q+2", confidence=Confidence.medium, votes=34,
        visibility=Visibility.customers,
        internal_notes="Customers only while we validate the permission list with the design partners.",
    ),
    # --- under consideration ----------------------------------------------------------------------------
    DemoItem(
        "web", "Demand forecasting from point-of-sale data",
        "Suggest how many people you need each hour, from past sales and events.",
        """Several customers asked whether Rotawise could tell them *how many* people to schedule, not only who.

What we are considering:

- Learn from at least 8 weeks of sales imported from your point of sale.
- Suggest the staff needed per role and hour, shown as a line over the schedule.
- Take bank holidays and local events into account, and explain every suggestion.

**Tell us:** which point-of-sale system do you use, and would you use a suggestion you could not edit?""",
        ((UC, 110),),
        tags=("Reporting", "Integrations"), timeframe="later", votes=91,
    ),
    DemoItem(
        "mobile", "Clock in from Apple Watch and Wear OS",
        "See your next shift on your wrist and clock in with a tap.",
        """Useful where phones are not allowed on the floor — wards, kitchens, clean rooms.

- Your next shift and break times on a watch complication.
- Clock in, start and end a break, clock out — with the same geofence checks as the phone app.

We would like to hear from teams where phones are not allowed at work.""",
        ((UC, 80),),
        tags=("Time tracking",), timeframe="later", votes=17,
    ),
    DemoItem(
        "web", "Two-way sync with Google Calendar and Outlook",
        "Your shifts in the calendar you already use, updated within a minute.",
        """Today you can subscribe to a read-only iCal feed, which some calendar apps refresh only once a day.

What we are considering:

- Connect Google Calendar or Microsoft Outlook and have shifts appear within a minute of a change.
- Optionally read busy times back from your calendar as unavailability.
- Choose which calendar the shifts go into and how they are named.""",
        ((UC, 200),),
        tags=("Integrations",), timeframe="later", votes=118,
    ),
    DemoItem(
        "web", "Skills and certifications on shifts",
        "Offer shifts only to people with the right skill or a valid certificate.",
        """Some shifts need someone qualified: a first-aider on every shift, a licensed pharmacist, a
forklift certificate.

- Record skills and certificates per person, with expiry dates.
- Mark shifts as requiring a skill; the schedule warns when nobody on shift has it.
- Remind people and their managers 30 days before a certificate expires.""",
        ((UC, 65),),
        tags=("Admin",), timeframe="q+3", confidence=Confidence.low, votes=66,
    ),
    DemoItem(
        "web", "Scheduled report emails",
        "Labour cost and timesheet reports in your inbox every Monday morning.",
        """- Schedule any saved report daily, weekly or monthly.
- Send it to managers, or to people outside Rotawise such as your accountant, as PDF or CSV.
- Reports respect the permissions of the person who scheduled them.""",
        ((UC, 45),),
        tags=("Reporting", "Notifications"), timeframe="later", votes=24,
    ),
    DemoItem(
        "mobile", "Arabic and Hebrew in the mobile app",
        "The app in right-to-left languages, with layouts mirrored correctly.",
        """Rotawise is available in 11 languages, all written left to right. Customers in the Gulf and in
Israel asked for Arabic and Hebrew.

- Mirror the layouts in the app, including the week view and timelines.
- Translate the app and the notification texts.
- The web app would follow once the mobile app is done.""",
        ((UC, 28),),
        tags=("Accessibility",), timeframe="later", votes=9,
    ),
    DemoItem(
        "web", "Stream the audit log to your SIEM",
        "Send audit events to Splunk, Datadog or Microsoft Sentinel as they happen.",
        """Security teams at larger customers want Rotawise events — sign-ins, permission changes, exports —
in the same place as everything else.

- Stream events over HTTPS to Splunk HEC, Datadog Logs or Microsoft Sentinel.
- Or pull them from a paginated API endpoint.
- Keep 13 months of audit history in Rotawise.""",
        ((UC, 16),),
        tags=("Security", "API"), timeframe="q+3", confidence=Confidence.low, votes=15,
        visibility=Visibility.customers, segments=("Enterprise",),
        internal_notes="Enterprise only: SIEM streaming will be part of the Enterprise plan. Harbour Health and "
                       "Brightside asked for Sentinel and Splunk respectively.",
    ),
    # --- declined -----------------------------------------------------------------------------------------
    DemoItem(
        "mobile", "Built-in team chat",
        "A chat inside Rotawise for each team and each shift.",
        """Customers asked for a way to talk about shifts without personal WhatsApp groups.

**Why we declined it:** a good chat app is a product of its own, and most teams already use Slack,
Microsoft Teams or WhatsApp. Instead we are:

- sending rota and shift notifications to Slack and Teams channels,
- building open shifts and shift swaps into Rotawise, so the most common chat messages are no longer needed.

Thank you to everyone who voted: your comments shaped the open shifts work.""",
        ((UC, 230), (DECLINED, 60)),
        tags=("Notifications",), timeframe="later", votes=48,
    ),
    DemoItem(
        "web", "Fingerprint clock-in terminals",
        "Biometric time clocks that connect to Rotawise.",
        """This would stop "buddy punching" — one person clocking in for another.

**Why we declined it:** biometric data comes with strict legal duties (GDPR, Illinois BIPA) and we do
not want to store it. Geofenced clock-in from the app, with an optional photo, covers the same need
without fingerprints. Existing terminals can still send their punches through the API.""",
        ((UC, 150), (DECLINED, 100)),
        tags=("Time tracking", "Security"), timeframe="later", votes=21,
    ),
    # --- drafts (not published) ---------------------------------------------------------------------------
    DemoItem(
        "web", "AI-suggested rotas",
        "A first draft of next week's rota, from demand, availability and your rules.",
        """Building a rota from scratch takes a manager two to four hours a week. We are exploring a
generated first draft.

- Uses availability, time off, skills, contract hours and the demand forecast.
- Explains every assignment and never publishes on its own.
- Managers edit the draft like any other rota.""",
        ((UC, 6),),
        tags=("Admin",), timeframe="later", draft=True,
        internal_notes="Depends on demand forecasting. Do not publish before legal has reviewed the wording "
                       "on automated decisions (EU AI Act).",
    ),
    DemoItem(
        "web", "Tip pooling and tip-out reports",
        "Split pooled tips by hours or role points, and export them with payroll.",
        """- Import tips from the point of sale per day or per shift.
- Split them by hours worked, by role points or by a fixed percentage.
- Staff see their share in the app; managers export it with payroll.""",
        ((PLANNED, 3),),
        tags=("Reporting",), timeframe="q+2", confidence=Confidence.low, draft=True,
        internal_notes="Waiting for the US labour law review: tip credit rules differ by state.",
    ),
    # --- internal (staff only) ----------------------------------------------------------------------------
    DemoItem(
        "web", "Retire API v1",
        "Announce and carry out the end of API v1, a year after v2 ships.",
        """- Email every account with an active v1 key 6, 3 and 1 months before the date.
- Add a `Deprecation` header to every v1 response.
- Publish a migration guide that maps each v1 endpoint to v2.""",
        ((PLANNED, 40),),
        tags=("API",), timeframe="q+4", confidence=Confidence.low, visibility=Visibility.internal,
        internal_notes="38 accounts made a v1 call in the last 30 days; five of them make 92% of the traffic. "
                       "Talk to those five personally.",
    ),
    DemoItem(
        "web", "Run large exports as background jobs",
        "Big payroll and report exports run in the background instead of timing out.",
        """Exports for big accounts can take more than 30 seconds and hit the request timeout.

- Exports run as background jobs; the page shows progress and emails a link when done.
- Retries reuse the same idempotency key, so a retried export never sends hours twice.""",
        ((PLANNED, 55), (IN_PROGRESS, 21)),
        tags=("Performance",), timeframe="now", visibility=Visibility.internal,
        internal_notes="Two incidents in September (INC-2291, INC-2304) were export timeouts.",
    ),
)


# --- writing it ---------------------------------------------------------------------------------------


def is_empty(session: Session) -> bool:
    return not session.scalar(select(func.count()).select_from(Item))


@contextmanager
def _dated(session: Session, when: datetime) -> Iterator[None]:
    """Give every row the services add inside the block (stage changes, audit events, ...) this date.

    The services stamp rows with the current time; the demo's history happened over the past year.
    """
    added: list[Any] = []

    def collect(_session: Session, instance: Any) -> None:
        added.append(instance)

    event.listen(session, "transient_to_pending", collect)
    try:
        yield
    finally:
        event.remove(session, "transient_to_pending", collect)
    for instance in added:
        for name in ("created_at", "changed_at"):
            if hasattr(instance, name):
                setattr(instance, name, when)


class _Clock:
    """Past moments at office hours, deterministic for a given seeding time."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.rng = random.Random(42)  # nosec B311 # seeded on purpose: the same demo data every time

    def days_ago(self, days: int) -> datetime:
        day = self.now - timedelta(days=days)
        moment = day.replace(hour=self.rng.randint(8, 16), minute=self.rng.randint(0, 59), second=0, microsecond=0)
        return min(moment, self.now)


def _timeframe(demo: DemoItem, released_on: date | None, today: date) -> tuple[Timeframe, int | None, int | None]:
    if demo.timeframe.startswith("q+"):
        year, quarter = quarter_choices(today)[int(demo.timeframe[2:])]
        return Timeframe.quarter, year, quarter
    if demo.timeframe:
        return Timeframe(demo.timeframe), None, None
    if released_on is not None:
        year, quarter = current_quarter(released_on)
        return Timeframe.quarter, year, quarter
    return Timeframe.later, None, None


@cache
def _demo_password_hash() -> str:
    # Hashed once per process: argon2 is slow on purpose, and the tests seed many times.
    accounts.check_password_strength(DEMO_PASSWORD)
    return passwords.hash_password_blocking(DEMO_PASSWORD)


def _staff(session: Session, *, email: str, role: Role, name: str, with_password: bool,
           when: datetime) -> tuple[User, bool]:
    """The demo staff account, or an existing account with that email left as it is."""
    existing = accounts.get_user_by_email(session, email)
    if existing is not None:
        return existing, False
    with _dated(session, when):
        user = accounts.create_user(session, email=email, role=role, display_name=name)
    if with_password:
        user.password_hash = _demo_password_hash()
    return user, True


def seed_demo(session: Session) -> str:
    """Load the demo company; returns a summary for the terminal (with the demo staff password)."""
    settings = get_settings()
    stages = {s.slug: s for s in roadmap.list_stages(session)}
    missing = {s for demo in ITEMS for s, _ in demo.history} - set(stages)
    if missing:
        return ("Demo data not loaded: the demo needs the default stages, and these are missing: "
                + ", ".join(sorted(missing)) + ".")
    if any(p.name in {name for name, _ in PRODUCTS.values()} for p in roadmap.list_products(session)):
        return f"Demo data not loaded: the {COMPANY} demo products are already there."

    now = utcnow()
    clock = _Clock(now)
    setup = clock.days_ago(SETUP_DAYS_AGO)
    # A known password must never guard a production portal: there the demo staff get none
    # (`ahead reset-password EMAIL` gives them one).
    password = None if settings.is_production else DEMO_PASSWORD
    admin, admin_new = _staff(session, email=ADMIN_EMAIL, role=Role.admin, name="Sam Okafor",
                              with_password=password is not None, when=setup)
    pm, pm_new = _staff(session, email=PM_EMAIL, role=Role.pm, name="Priya Menon",
                        with_password=password is not None, when=setup + timedelta(days=2))

    with _dated(session, setup + timedelta(hours=1)):
        portal.update_branding(session, actor=admin, values=portal.resolve_branding(
            session, validate_form(portal.BrandingUpdate, BRANDING)))
        products = {key: roadmap.create_product(
            session, data=roadmap.ProductCreate(name=name, description=description), actor=admin)
                    for key, (name, description) in PRODUCTS.items()}
        existing_tags = {t.name.lower(): t for t in roadmap.list_tags(session)}
        tags = {name: existing_tags.get(name.lower()) or roadmap.create_tag(
            session, data=roadmap.TagCreate(name=name), actor=admin)
                for name in TAGS}

    # Customers before the items, without drawing from the clock: the items' history stays as it was.
    segments, organisations_by_name = _customer_companies(session, admin=admin, when=setup + timedelta(days=3))
    items = [_write_item(session, demo, clock=clock, stages=stages, products=products, tags=tags, pm=pm,
                         segments=segments)
             for demo in ITEMS]
    customers = _customers(session, companies=organisations_by_name, now=now, with_password=password is not None)
    session.flush()
    voters = _demo_votes(session, items=list(zip(items, ITEMS, strict=True)), companies=organisations_by_name,
                         clock=clock)
    said = _demo_conversations(session, items=items, customers=customers, voters=voters,
                               companies=organisations_by_name, segments=segments, pm=pm, clock=clock)
    _demo_changelog(session, items=items, products=products, pm=pm)
    _demo_tech(session, items=items, pm=pm, admin=admin, when=clock.days_ago(3))
    _demo_desk(session, items=items, stages=stages, pm=pm)
    summary = _summary(items, settings.base_url, admin if admin_new else None, pm if pm_new else None, password)
    return summary + "\n" + _customer_summary(customers, voters, settings.base_url, password, said)


def _write_item(session: Session, demo: DemoItem, *, clock: _Clock, stages: dict[str, Stage],
                products: dict[str, Any], tags: dict[str, Any], pm: User, segments: dict[str, Segment]) -> Item:
    moments = [clock.days_ago(days) for _, days in demo.history]
    released_at = next((at for (slug, _), at in zip(demo.history, moments, strict=True)
                        if stages[slug].is_released), None)
    kind, year, quarter = _timeframe(demo, released_at.date() if released_at else None, clock.now.date())
    data = roadmap.ItemInput(
        title=demo.title, summary=demo.summary, description=demo.description,
        internal_notes=demo.internal_notes, release_notes="", product=products[demo.product],
        stage=stages[demo.history[0][0]], timeframe=kind, target_year=year, target_quarter=quarter,
        confidence=demo.confidence, visibility=demo.visibility, tags=sorted((tags[t] for t in demo.tags),
                                                                            key=lambda t: t.name),
        segments=sorted((segments[name] for name in demo.segments), key=lambda s: s.name),
    )
    with _dated(session, moments[0]):
        item = roadmap.create_item(session, data=data, author=pm, publish=False)
    item.created_at = last = moments[0]
    if not demo.draft:
        # Written up, then published the same afternoon.
        last = moments[0] + timedelta(minutes=clock.rng.randint(20, 180))
        with _dated(session, last):
            roadmap.set_published(session, item=item, published=True, actor=pm)
        item.published_at = last
    for (slug, _), at in zip(demo.history[1:], moments[1:], strict=True):
        with _dated(session, at):
            roadmap.move_item(session, item=item, stage=stages[slug], actor=pm)
        last = at
    if released_at is not None:
        item.released_at = released_at
    if demo.release_notes:
        last = last + timedelta(minutes=clock.rng.randint(5, 40))
        with _dated(session, last):
            roadmap.update_item(session, item=item, actor=pm,
                                data=replace(data, stage=item.stage, release_notes=demo.release_notes))
    item.updated_at = last
    return item


@dataclass(frozen=True, slots=True)
class DemoEntry:
    """A changelog entry the PM wrote over released demo items (titles in ITEMS), published the day after the
    newest of them shipped; product None: the whole portal."""

    title: str
    notes: str
    items: tuple[str, ...]
    product: str | None = None


CHANGELOG: tuple[DemoEntry, ...] = (
    DemoEntry(
        "Rotawise Web: sign in with your company account, and see what labour really costs",
        """Two things larger teams asked for most this year, now on the Business plan.

- **Single sign-on** through SAML: your people sign in with Okta, Entra ID or Google Workspace.
- A **labour cost report** that puts scheduled and clocked hours next to your sales.

Both are switched on for every Business account; the release notes of each say where to start.""",
        ("SAML single sign-on (Okta, Microsoft Entra ID)", "Labour cost vs. sales report"), product="web"),
    DemoEntry(
        "Winter release: faster rotas and a darker app",
        """Rotas that build themselves from last week's shape, and an app that is easier on the eyes on a night
shift. Thank you to everyone who voted for these and told us how you would use them.""",
        ("Shift templates for recurring weeks", "Dark mode in the mobile app")),
)


def _demo_changelog(session: Session, *, items: list[Item], products: dict[str, Any], pm: User) -> None:
    """The changelog entries of CHANGELOG, dated after their items; written as drafts and dated by hand, so that
    seeding history announces nothing (no changelog email, no webhook) as publishing now would."""
    by_title = {item.title: item for item in items}
    for demo in CHANGELOG:
        grouped = [by_title[title] for title in demo.items]
        at = max(item.released_at for item in grouped if item.released_at is not None) + timedelta(days=1)
        at = min(at, utcnow() - timedelta(hours=1))
        data = changelog.EntryInput(title=demo.title, notes=demo.notes,
                                    product=products[demo.product] if demo.product else None,
                                    items=sorted(grouped, key=lambda i: i.released_at or at, reverse=True),
                                    published_at=None)
        with _dated(session, at):
            entry = changelog.create_entry(session, data=data, actor=pm)
        entry.published_at = entry.created_at = entry.updated_at = at
    session.flush()


@dataclass(frozen=True, slots=True)
class DemoInitiative:
    """An engineering initiative of the demo's technology roadmap, the items it delivers (titles in ITEMS) and
    its tracker issues as (address, status, done, estimate)."""

    title: str
    description: str
    quarter: str
    items: tuple[str, ...]
    links: tuple[tuple[str, str, bool, int], ...]


INITIATIVES: tuple[DemoInitiative, ...] = (
    DemoInitiative(
        "Offline-first sync engine for the mobile app",
        "Replace the app's request-per-action calls with a local store that syncs when a connection comes back. "
        "Unblocks clocking in without signal and shift swaps that survive a dropped connection.",
        "2027-Q1", ("Clock in without mobile signal", "Swap shifts from the mobile app"),
        (("https://github.com/rotawise/mobile/issues/412", "closed", True, 5),
         ("https://github.com/rotawise/mobile/pull/418", "open", False, 3),
         ("https://github.com/rotawise/mobile/issues/431", "open", False, 8))),
    DemoInitiative(
        "Schedule grid rewrite (virtualised, accessible)",
        "A new schedule grid that renders only the visible rows and is built on the ARIA grid pattern from the "
        "start: large rotas open at once, and keyboards and screen readers reach every cell.",
        "2026-Q4", ("Schedules for 1,000+ staff load in under a second",
                    "Screen reader and keyboard support for the schedule grid"),
        (("https://rotawise.atlassian.net/browse/WEB-201", "Done", True, 5),
         ("https://rotawise.atlassian.net/browse/WEB-214", "In Progress", False, 5),
         ("https://rotawise.atlassian.net/browse/WEB-230", "To Do", False, 3))),
)


# The prioritisation desk's own inputs, so a new PM sees RICE and decisions on record, not only "—":
# RICE confidence (percent) and effort (person-months) on a few items, entered as on the item's demand page...
DEMO_RICE = (
    ("Open shifts that qualified staff can claim", 80, Decimal(3)),
    ("Demand forecasting from point-of-sale data", 50, Decimal(6)),
    ("Stream the audit log to your SIEM", 70, Decimal(2)),
    ("Clock in without mobile signal", 90, Decimal("1.5")),
)
# ...and stage moves recorded with why, as the Move form records them (after the votes, so the snapshot has the
# desk's numbers of today).
DEMO_DECISIONS = (
    ("Stream the audit log to your SIEM", "planned",
     "High weighted demand on the desk, and customers' security reviews ask for it; about two person-months."),
    ("Clock in from Apple Watch and Wear OS", "declined",
     "Few voters and little weighted demand; clocking in without signal on the phone answers most of the need."),
)


def _demo_desk(session: Session, *, items: list[Item], stages: dict[str, Stage], pm: User) -> None:
    by_title = {item.title: item for item in items}
    for title, confidence, effort in DEMO_RICE:
        desk.set_rice(session, item=by_title[title], confidence=confidence, effort=effort, actor=pm)
    for title, stage, why in DEMO_DECISIONS:
        decisions.move_item(session, item=by_title[title], stage=stages[stage], why=why, actor=pm)


def _demo_tech(session: Session, *, items: list[Item], pm: User, admin: User, when: datetime) -> None:
    """The technology roadmap behind some in-flight items: INITIATIVES, their links (statuses as a tracker last
    reported them; nothing is fetched), a GitHub webhook limited to the mobile repository (its secret is not shown:
    delete it and make one to connect a real repository), and a public progress bar on one item."""
    by_title = {item.title: item for item in items}
    with _dated(session, when):
        for demo in INITIATIVES:
            data = tech.InitiativeForm(title=demo.title, description=demo.description, owner_id=pm.id,
                                       status=InitiativeStatus.active, quarter=demo.quarter)
            initiative = tech.create_initiative(session, data=data, actor=pm)
            for title in demo.items:
                tech.link_item(session, initiative=initiative, item=by_title[title], actor=pm)
            for url, status, done, estimate in demo.links:
                ref = trackers.recognise(url)
                tech.add_link_ref(session, kind=ref.kind, key=ref.key, url=ref.url, status=status, done=done,
                                  started=done or status == "In Progress" or "/pull/" in url,
                                  estimate=Decimal(estimate), actor=pm, initiative=initiative)
        tech.create_hook(session, data=tech.HookForm(name="GitHub rotawise/mobile", kind=HookKind.github,
                                                     scope="rotawise/mobile"), actor=admin)
        grid = by_title["Schedules for 1,000+ staff load in under a second"]
        tech.set_delivery(session, item=grid, data=tech.DeliveryForm(show_progress=True), actor=pm)
    session.flush()


def _summary(items: list[Item], base_url: str, admin: User | None, pm: User | None, password: str | None) -> str:
    released = sum(1 for i in items if i.released_at is not None and i.published_at is not None)
    drafts = sum(1 for i in items if i.published_at is None)
    hidden = {v: sum(1 for i in items if i.visibility is v) for v in (Visibility.internal, Visibility.customers)}
    lines = [
        (f"Demo data loaded: {COMPANY} — {len(PRODUCTS)} products, {len(TAGS)} tags, {len(items)} items "
         f"({released} released, {drafts} drafts, {hidden[Visibility.internal]} internal, "
         f"{hidden[Visibility.customers]} for customers only)."),
    ]
    created = [(u, label) for u, label in ((admin, "admin"), (pm, "product manager")) if u is not None]
    if created and password:
        lines.append(f"Demo staff accounts — sign in at {base_url}/login with the password: {password}")
        lines += [f"  {u.email}  ({label})" for u, label in created]
        lines.append("Anyone who knows this password can sign in: change it before others can reach the portal.")
    elif created:
        lines.append("Demo staff accounts were created without a password (production): "
                     + ", ".join(u.email for u, _ in created) + ". Use `ahead reset-password EMAIL` to set one.")
    return "\n".join(lines)


# --- customers: segments, organisations and a few people ------------------------------------------------

# (name, weight): plan tiers; a segment's weight multiplies its customers' votes on the desk.
SEGMENTS = (("Starter", "1"), ("Business", "2"), ("Enterprise", "4"))
# (name, segment, email domains, yearly revenue). .example domains: reserved, nobody's real company.
ORGANISATIONS = (
    ("Harbour Health Clinics", "Enterprise", ("harbourhealth.example",), "186000"),
    ("Brightside Retail Group", "Enterprise", ("brightside.example", "brightside-stores.example"), "242000"),
    ("Copper Kettle Restaurants", "Business", ("copperkettle.example",), "48000"),
    ("Meadow Pharmacy", "Business", ("meadowpharmacy.example",), "36500"),
    ("Lantern Coffee", "Starter", ("lanterncoffee.example",), "4800"),
    ("Pine & Co Bakery", "Starter", ("pineandco.example",), "2400"),
)
# (email, name, organisation, days since they last signed in). The first one gets the demo password.
CUSTOMERS = (
    ("maya.chen@harbourhealth.example", "Maya Chen", "Harbour Health Clinics", 1),
    ("tom.becker@brightside.example", "Tom Becker", "Brightside Retail Group", 6),
    ("lucia.romero@copperkettle.example", "Lucía Romero", "Copper Kettle Restaurants", 3),
    ("sunil.rao@meadowpharmacy.example", "Sunil Rao", "Meadow Pharmacy", 12),
    ("owen.price@lanterncoffee.example", "Owen Price", "Lantern Coffee", 20),
    ("ines.moreau@pineandco.example", "Inès Moreau", "Pine & Co Bakery", 41),
)
DEMO_CUSTOMER_EMAIL = CUSTOMERS[0][0]


def _customer_companies(session: Session, *, admin: User, when: datetime) -> tuple[dict[str, Segment],
                                                                                     dict[str, Organisation]]:
    """The demo segments and organisations, through the admin services; existing ones are reused as they are."""
    existing_segments = {s.name.lower(): s for s in organisations.list_segments(session)}
    existing_organisations = {row.organisation.name.lower(): row.organisation
                              for row in organisations.list_organisations(session)}
    segments: dict[str, Segment] = {}
    by_name: dict[str, Organisation] = {}
    with _dated(session, when):
        for name, weight in SEGMENTS:
            segments[name] = existing_segments.get(name.lower()) or organisations.create_segment(
                session, actor=admin, data=organisations.resolve_segment(
                    session, validate_form(organisations.SegmentCreate, {"name": name, "weight": weight})))
        for name, segment, domains, revenue in ORGANISATIONS:
            found = existing_organisations.get(name.lower())
            if found is None:
                try:
                    data = organisations.resolve_organisation(session, validate_form(organisations.OrganisationCreate, {
                        "name": name, "domains": "\n".join(domains), "segment_id": str(segments[segment].id),
                        "revenue": revenue}))
                except FormInvalid:
                    continue  # a domain already belongs to an organisation of the portal's own: leave it there
                found = organisations.create_organisation(session, data=data, actor=admin)
            by_name[name] = found
    return segments, by_name


def _customers(session: Session, *, companies: dict[str, Organisation], now: datetime,
               with_password: bool) -> list[User]:
    """The demo customers who were created now (an existing account with the same email is left alone)."""
    created: list[User] = []
    for index, (email, name, organisation, days) in enumerate(CUSTOMERS):
        if accounts.get_user_by_email(session, email) is not None or organisation not in companies:
            continue
        with _dated(session, now - timedelta(days=days + 30)):
            user = accounts.create_user(session, email=email, role=Role.customer, display_name=name)
        user.organisation_id = companies[organisation].id
        user.last_login_at = (now - timedelta(days=days)).replace(hour=9, minute=15, second=0, microsecond=0)
        if index == 0 and with_password:
            user.password_hash = _demo_password_hash()
        created.append(user)
    return created


def _customer_summary(customers: list[User], voters: list[User], base_url: str, password: str | None,
                      said: dict[str, int]) -> str:
    """What was added, counted as the People page counts it: accounts, then contacts without one."""
    contacts = said.get("contacts", 0)
    added = (f"{len(customers) + len(voters)} customer accounts ({len(customers)} named in the inbox and the "
             f"comments, {len(voters)} more who voted)")
    if contacts:
        added += (f" and {contacts} contact{'s' if contacts != 1 else ''} without an account yet, whose vote the "
                  "team recorded")
    lines = [(f"Demo customers: {len(SEGMENTS)} segments, {len(ORGANISATIONS)} organisations, {added}. "
              "Customers sign in with an email link (without SMTP_URL the link is printed in the server's log).")]
    if password and any(u.email == DEMO_CUSTOMER_EMAIL for u in customers):
        lines.append(f"To look around as a customer of the Enterprise segment, sign in at {base_url}/login under "
                     f"“Sign in with a password” as {DEMO_CUSTOMER_EMAIL} with the same password.")
    if said:
        lines.append(f"What customers said: {said['ideas']} ideas, {said['reasons']} reasons given with votes and "
                     f"{said['captured']} notes from calls and meetings in the inbox (/admin/feedback), "
                     f"{said['comments']} comments, of which {said['reported']} reported ones wait in moderation "
                     "(/admin/moderation).")
    return "\n".join(lines)


# --- votes: real rows from demo customers, so the counters and `ahead reconcile` agree -----------------

_FIRST = ("Alex", "Sam", "Jo", "Kim", "Lee", "Ana", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo")
_LAST = ("Adams", "Brown", "Costa", "Diaz", "Evans", "Fox", "Gray", "Hughes", "Ito", "Jones", "Khan", "Lund")


def _demo_votes(session: Session, *, items: list[tuple[Item, DemoItem]], companies: dict[str, Organisation],
                clock: _Clock) -> list[User]:
    """Customers of the demo organisations vote: `DemoItem.votes` becomes that many real vote rows.

    Returns the voters it created."""
    from sqlalchemy import insert

    wanted = max((demo.votes for item, demo in items if item.published_at is not None), default=0)
    if not wanted or not companies:
        return []
    orgs = list(companies.values())
    domains = {name: domains[0] for name, _, domains, _ in ORGANISATIONS}
    segment_of = {name: segment for name, segment, _, _ in ORGANISATIONS}
    voters: list[User] = []
    voter_orgs: list[Organisation] = []
    for n in range(wanted):
        first, last = _FIRST[n % len(_FIRST)], _LAST[(n // len(_FIRST)) % len(_LAST)]
        organisation = orgs[n % len(orgs)]
        user = User(email=f"{first}.{last}{n}@{domains.get(organisation.name, 'example.com')}".lower(),
                    display_name=f"{first} {last}", role=Role.customer, organisation_id=organisation.id,
                    created_at=clock.days_ago(SETUP_DAYS_AGO - 10))
        voters.append(user)
        voter_orgs.append(organisation)
    session.add_all(voters)
    session.flush()
    votes, follows = [], []
    for item, demo in items:
        if item.published_at is None or not demo.votes:
            continue
        start = item.published_at
        end = item.released_at or clock.now
        span = max(1.0, (end - start).total_seconds())
        # Only people who may see the item vote on it (segment-limited items: their segment's customers).
        allowed = [v for v, org in zip(voters, voter_orgs, strict=True)
                   if not demo.segments or segment_of.get(org.name) in demo.segments]
        for voter in clock.rng.sample(allowed, min(demo.votes, len(allowed))):
            at = start + timedelta(seconds=clock.rng.random() * span)
            importance = clock.rng.choices(list(Importance), weights=(4, 4, 2))[0]
            votes.append({"item_id": item.id, "user_id": voter.id, "importance": int(importance),
                          "created_at": at, "updated_at": at, "source_url": ""})
            # They were signed in when they voted: the people page shows their latest visit, not "Never".
            voter.last_login_at = max(voter.last_login_at or at, at)
            follows.append({"item_id": item.id, "user_id": voter.id, "created_at": at})
    session.execute(insert(Vote), votes)
    session.execute(insert(Follow), follows)
    voting.reconcile(session)
    return voters


# --- what customers said: ideas, reasons, notes, comments and reports ----------------------------------
# So that the inbox and the moderation queue — the PM's main screens — have something in them on first
# look, written through the same services the pages use. Only on a fresh demo (the named customers were
# created by this run). Days ago are counted from now, like the items' history.


@dataclass(frozen=True, slots=True)
class DemoIdea:
    author: str  # a CUSTOMERS email
    product: str  # a PRODUCTS key
    title: str
    body: str
    days_ago: int
    # What the team did with it: "" (still new), "link:<item title>", "decline:<reason>" or "archive".
    outcome: str = ""


IDEAS = (
    DemoIdea("lucia.romero@copperkettle.example", "web", "Export approved hours to Sage Payroll",
             "We moved our UK restaurants to Sage this spring. Gusto and ADP don't help us, and Xero is not what "
             "we use: today I retype every person's hours into Sage each fortnight.", 2),
    DemoIdea("owen.price@lanterncoffee.example", "mobile", "Let staff set their availability a month ahead",
             "Our baristas are mostly students. They know their lecture timetable for the whole term, but the app "
             "only lets them set availability week by week.", 4),
    DemoIdea("tom.becker@brightside.example", "web", "A weekly labour budget per department",
             "Each store manager gets a budget in hours for every department. I want Rotawise to show how much of "
             "it a draft rota uses before it is published, not after.", 6),
    DemoIdea("ines.moreau@pineandco.example", "web", "Print the week's rota on one A4 page",
             "We pin the rota on the wall by the ovens. The print view spreads it over three pages and cuts "
             "names in half.", 9),
    DemoIdea("sunil.rao@meadowpharmacy.example", "web", "Show which pharmacist is in charge on each shift",
             "By law one registered pharmacist is responsible at any time. We mark it in the shift notes today, "
             "which nobody reads.", 21, outcome="link:Skills and certifications on shifts"),
    DemoIdea("maya.chen@harbourhealth.example", "mobile", "Clock in by tapping our hospital ID badge",
             "Our nurses already carry NFC badges. Tapping them on a reader by the ward door would be faster than "
             "unlocking a phone with gloves on.", 34,
             outcome="decline:Thank you, Maya. We will not build our own badge readers: the hardware and its "
                     "upkeep differ at every hospital. API v2 will let your badge system send clock-ins to "
                     "Rotawise, and we will publish a guide for it."),
    DemoIdea("owen.price@lanterncoffee.example", "mobile", "Dark theme for the app",
             "Closing up at night, the white screen is blinding.", 70, outcome="archive"),
)

# (author email, item title, importance, days ago, why). Each author votes on the item, then says why.
REASONS = (
    ("maya.chen@harbourhealth.example", "Open shifts that qualified staff can claim", Importance.critical, 3,
     "Our wards lose hours every week ringing round for cover. Nurses must only be offered shifts for their own "
     "grade, or this will not work for us."),
    ("tom.becker@brightside.example", "Multi-location rotas with shared staff", Importance.critical, 5,
     "About 80 of our people work in two or three stores. They have two logins today, and payroll checks "
     "every one of them by hand."),
    ("lucia.romero@copperkettle.example", "Two-way sync with Google Calendar and Outlook", Importance.important, 8,
     "Chefs miss changed shifts because their phone calendar only refreshes the feed once a day."),
    ("sunil.rao@meadowpharmacy.example", "Time-off balances and accrual policies", Importance.important, 12,
     "We keep leave in a spreadsheet next to Rotawise, for staff in two countries with different rules."),
    ("owen.price@lanterncoffee.example", "Demand forecasting from point-of-sale data", Importance.nice_to_have, 15,
     "We use Square. A suggestion would help on market days, as long as I can change it."),
    ("maya.chen@harbourhealth.example", "Stream the audit log to your SIEM", Importance.critical, 1,
     "Our security team wants sign-ins in Microsoft Sentinel before we roll Rotawise out to the other two "
     "hospitals."),
    ("ines.moreau@pineandco.example", "Overtime and rest-period warnings before you publish", Importance.important,
     17, "Twice this year a baker closed at night and opened the next morning. I only noticed on payday."),
)

# Votes the PM recorded for customers: (customer email, or "name <email> @ organisation" for a contact
# without an account, item title, importance, source, days ago, note).
CAPTURED = (
    ("tom.becker@brightside.example", "Schedules for 1,000+ staff load in under a second", Importance.critical,
     CaptureSource.meeting, 10,
     "Quarterly review: the regional managers gave up on the week view for the flagship store and plan in "
     "Excel instead. Renewal is in March."),
    ("sunil.rao@meadowpharmacy.example", "Clock in without mobile signal", Importance.important,
     CaptureSource.call, 7,
     "Support call: the dispensary is in a basement with no signal, so staff clock in late from the car park."),
    ("Ade Okoro <ade.okoro@brightside-stores.example> @ Brightside Retail Group", "Xero and QuickBooks payroll export",
     Importance.important, CaptureSource.ticket, 13,
     "Finance lead for the Australian stores, who run Xero Payroll. Asked in a support ticket when it comes."),
)

# Public discussion: (item title, author email or "pm", days ago, text, replies as (author, days ago, text)).
# An official answer from the PM is pinned when it starts a thread.
COMMENTS = (
    ("Built-in team chat", "lucia.romero@copperkettle.example", 200,
     "What we really need is to tell the team when a shift is free. Today that happens in a WhatsApp group.", (
         ("tom.becker@brightside.example", 196,
          "Please don't build another chat — our staff already have Teams. Rota changes posted to a Teams "
          "channel would cover it for us."),
         ("sunil.rao@meadowpharmacy.example", 190,
          "Agree with Tom. Most of our messages are \"can anyone swap with me on Saturday?\""),
     )),
    ("Built-in team chat", "pm", 61,
     "Thank you all — your comments decided this one. We are not building a chat. Instead, open shifts and "
     "shift swaps come to Rotawise itself, and rota notifications will go to Slack and Teams channels.", ()),
    ("Swap shifts from the mobile app", "owen.price@lanterncoffee.example", 20,
     "Could a swap between two people who both agree go through without a manager at weekends?", (
         ("pm", 19, "Yes: each location will choose whether swaps need a manager's approval or are approved "
                    "automatically when both people agree and no rule is broken."),
     )),
    ("Demand forecasting from point-of-sale data", "ines.moreau@pineandco.example", 30,
     "Lightspeed here. And yes, I would only use a suggestion I can edit.", ()),
    ("Open shifts that qualified staff can claim", "maya.chen@harbourhealth.example", 9,
     "Will agency staff be able to see open shifts too, or only our own employees?", ()),
)

# Comments customers reported, waiting in the moderation queue: (item title, author — "voter:N", the Nth of
# the demo voters —, days ago, text, reports as (reporter email, reason)).
REPORTED = (
    ("Two-way sync with Google Calendar and Outlook", "voter:15", 2,
     "Our agency builds this integration in two weeks for any scheduling tool — message me for a quote!", (
         ("lucia.romero@copperkettle.example", "Advertising, not about the item."),
         ("owen.price@lanterncoffee.example", "Spam"),
     )),
    ("Open shifts that qualified staff can claim", "voter:48", 1,
     "This has been \"in progress\" for ever. Does anyone at Rotawise actually work?", (
         ("maya.chen@harbourhealth.example", "Rude to the team, and not helpful."),
     )),
)


def _demo_conversations(session: Session, *, items: list[Item], customers: list[User], voters: list[User],
                        companies: dict[str, Organisation], segments: dict[str, Segment], pm: User,
                        clock: _Clock) -> dict[str, int]:
    """The ideas, reasons, captured notes, comments and reports above; how many of each were written."""
    people = {u.email: u for u in customers}
    if any(email not in people for email, *_ in CUSTOMERS):
        return {}
    segment_of = {name: segments[segment] for name, segment, _, _ in ORGANISATIONS}
    org_name = {o.id: name for name, o in companies.items()}
    by_title = {i.title: i for i in items}
    products = {p.name: p for p in roadmap.list_products(session)}
    product_by_key = {key: products[name] for key, (name, _) in PRODUCTS.items()}

    def viewer(user: User) -> Viewer:
        organisation = org_name.get(user.organisation_id or 0)
        return Viewer(user=user, segment_id=segment_of[organisation].id if organisation else None)

    def person(who: str) -> User:
        if who == "pm":
            return pm
        if who.startswith("voter:"):
            return voters[int(who[6:])]
        return people[who]

    def at(days: int) -> datetime:
        return clock.days_ago(days)

    for demo in IDEAS:
        with _dated(session, at(demo.days_ago)):
            data = feedback.parse_idea(session, title=demo.title, body=demo.body,
                                       product_id=str(product_by_key[demo.product].id))
            idea = feedback.submit_idea(session, author=people[demo.author], data=data)
        if demo.outcome:
            with _dated(session, at(max(demo.days_ago - 2, 0))):
                kind, _, rest = demo.outcome.partition(":")
                if kind == "link":
                    feedback.link_to_item(session, feedback=idea, item=by_title[rest], actor=pm)
                elif kind == "decline":
                    feedback.decline(session, feedback=idea, reason=rest, actor=pm)
                else:
                    feedback.archive(session, feedback=idea, actor=pm)

    for email, title, importance, days, why in REASONS:
        item, author, when = by_title[title], people[email], at(days)
        voting.cast_vote(session, item=item, user=author, importance=importance)
        vote = session.scalar(select(Vote).where(Vote.item_id == item.id, Vote.user_id == author.id))
        if vote is not None:
            vote.created_at = vote.updated_at = when
        with _dated(session, when):
            feedback.add_reason(session, item=item, author=author, body=why)

    for who, title, importance, source, days, note in CAPTURED:
        form: dict[str, str] = {"importance": str(int(importance)), "source": source.value, "note": note}
        if "<" in who:
            name, _, rest = who.partition(" <")
            email, _, organisation = rest.partition("> @ ")
            form |= {"customer": feedback.NEW_CONTACT, "contact_name": name, "contact_email": email,
                     "organisation_id": str(companies[organisation].id)}
        else:
            form["customer"] = str(people[who].id)
        with _dated(session, at(days)):
            feedback.capture_vote(session, item=by_title[title], data=feedback.parse_capture_form(session, form),
                                  actor=pm)

    comments = 0
    for title, who, days, text, replies in COMMENTS:
        item = by_title[title]
        with _dated(session, at(days)):
            top = discussion.create_comment(session, viewer=viewer(person(who)), item=item, body=text)
            if top.is_official:
                discussion.pin_comment(session, actor=pm, comment=top)
        comments += 1
        for reply_who, reply_days, reply in replies:
            with _dated(session, at(reply_days)):
                discussion.create_comment(session, viewer=viewer(person(reply_who)), item=item, body=reply,
                                          parent_public_id=top.public_id)
            comments += 1

    reports = 0
    for title, who, days, text, reporters in REPORTED:
        written = at(days)
        with _dated(session, written):
            comment = discussion.create_comment(session, viewer=viewer(person(who)), item=by_title[title], body=text)
        for email, reason in reporters:
            discussion.report_comment(session, viewer=viewer(people[email]), comment=comment, reason=reason)
            reports += 1
        reported = session.scalars(select(CommentReport).where(CommentReport.comment_id == comment.id)
                                   .order_by(CommentReport.id))
        for n, report in enumerate(reported, start=1):
            report.created_at = min(written + timedelta(hours=2 * n), clock.now)  # read and reported that day
        comments += 1

    voting.reconcile(session)  # the votes above were dated into the past: the 30-day trends follow
    return {"ideas": len(IDEAS), "reasons": len(REASONS), "captured": len(CAPTURED), "comments": comments,
            "reports": reports, "reported": len(REPORTED), "contacts": sum(1 for who, *_ in CAPTURED if "<" in who)}
