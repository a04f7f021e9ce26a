"""Flower's templates with the Orders view's beside them, "Orders" in Flower's navbar, and
on Flower's task page a link back to the task's order."""

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


#: on Flower's task page, a link back to the order an engine task belongs to: its task id is
#: ``<order id>:<step or undo>:<number>``, and the link is there only if the page's task
#: id has that shape
ORDER_LINK = """
    <p class="task-order-link" id="task-order">{% set parts = task.uuid.rsplit(':', 2) %}
      {% if len(parts) == 3 and parts[2].isdigit() %}Order
      <a href="{{ reverse_url('order', parts[0]) }}">{{ parts[0] }}</a>: its {{ parts[1] }}
      message (number {{ parts[2] }}){% end %}</p>"""


def with_order_link(task_page: str) -> str:
    """Flower's task page with a link back to the task's order under its header."""
    anchor = task_page.find('<p class="page-eyebrow">Task details</p>')
    if anchor < 0:
        return task_page
    anchor += len('<p class="page-eyebrow">Task details</p>')
    return task_page[:anchor] + ORDER_LINK + task_page[anchor:]


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
        if name == "task.html":
            text = with_order_link(text)
        return Template(text, name=name, loader=self)
