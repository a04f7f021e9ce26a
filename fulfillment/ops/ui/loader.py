"""Flower's templates with the Orders view's beside them, and "Orders" in Flower's navbar."""

from __future__ import annotations

from pathlib import Path

from tornado.template import Loader, Template

OURS = Path(__file__).resolve().parent / "templates"

ORDERS_ENTRY = """
        <li class="nav-item">
          <a class="nav-link{% if active_tab == 'orders' %} active{% end %}"
            href="{{ reverse_url('orders') }}"
            {% if active_tab == 'orders' %}aria-current="page"{% end %}>Orders</a>
        </li>"""


def with_orders_entry(navbar: str) -> str:
    """Flower's navbar with an Orders entry after Tasks (or at the end of its first list)."""
    tasks = navbar.find("reverse_url('tasks')")
    end = navbar.find("</li>", tasks) if tasks >= 0 else -1
    if end >= 0:
        end += len("</li>")
        return navbar[:end] + ORDERS_ENTRY + navbar[end:]
    first_list = navbar.find("</ul>")
    if first_list < 0:
        return navbar
    return navbar[:first_list] + ORDERS_ENTRY + navbar[first_list:]


class OverlayLoader(Loader):
    """Loads the Orders view's templates first, then Flower's (its navbar amended)."""

    def _create_template(self, name: str) -> Template:
        ours = OURS / name
        if ours.is_file():
            return Template(ours.read_bytes(), name=name, loader=self)
        text = (Path(self.root) / name).read_text()
        if name == "navbar.html":
            text = with_orders_entry(text)
        return Template(text, name=name, loader=self)
