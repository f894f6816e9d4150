"""UI modules (seed §6): ``Nav`` shows the top-level menus, ``Menu`` the side tree at any depth."""

from __future__ import annotations

from collections.abc import Sequence

from tornado.web import UIModule

from repositories.menus import MenuNode


class NavModule(UIModule):
    """The top navigation bar: the roots of the caller's menu tree."""

    def render(self, menus: Sequence[MenuNode]) -> bytes:
        """Render ``ui/nav.html``."""
        return self.render_string("ui/nav.html", menus=menus)


class MenuModule(UIModule):
    """The side menu: the caller's whole tree, nested lists to any depth."""

    def render(self, menus: Sequence[MenuNode]) -> bytes:
        """Render ``ui/menu.html`` (which includes itself for children); a leaf's empty list
        of children renders nothing without building a template namespace."""
        if not menus:
            return b""
        return self.render_string("ui/menu.html", menus=menus)


UI_MODULES = {"Nav": NavModule, "Menu": MenuModule}
