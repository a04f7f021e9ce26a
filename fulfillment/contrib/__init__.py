"""Integrations with the frameworks fulfillment runs in (``fulfillment.contrib.django``)."""
