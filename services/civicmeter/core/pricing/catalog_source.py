"""The price catalog in force, reloaded when its files change.

A catalog file that fails to load at start-up stops the service with the error (file, line,
reason). Later, `refresh()` (called every few seconds by the service) looks at the files the
catalog was read from (the catalog and its FX table); when one has changed it loads them again.
A good change takes over at once; a bad one is logged once, as one line naming the file, the
line and the reason, and the last good catalog stays in force until the files change again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from civicmeter.core.pricing import CatalogError, PriceCatalog, load_catalog
from civicmeter.policy.yaml_source import SourceFile

log = logging.getLogger("civicmeter.pricing")


class CatalogSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._catalog = load_catalog(path)  # a CatalogError here stops start-up
        self._watched = self._catalog.files or (SourceFile.of(path),)

    @property
    def catalog(self) -> PriceCatalog:
        return self._catalog

    def refresh(self) -> bool:
        """Reload if a file changed; True when a new catalog took over."""
        if not any(file.changed() for file in self._watched):
            return False
        try:
            catalog = load_catalog(self.path)
        except CatalogError as exc:
            # Watch what this attempt read, so that fixing any of it brings the next attempt.
            self._watched = exc.files or (SourceFile.of(self.path),)
            log.error(
                "price catalog change rejected, still pricing with %s: %s",
                self._catalog.describe(),
                exc,
            )
            return False
        self._catalog = catalog
        self._watched = catalog.files or (SourceFile.of(self.path),)
        log.info("price catalog reloaded from %s: %s", self.path, catalog.describe())
        return True
