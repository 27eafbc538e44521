"""The technology roadmap: engineering initiatives, the tracker issues that implement them, and the
signed webhooks that bring those issues' status back. Internal only: nothing here reaches a customer
surface except an item's plain delivery percentage, when a PM turns it on for that item."""
