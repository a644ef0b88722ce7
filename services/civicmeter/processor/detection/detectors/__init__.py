"""One detector per module; each looks at an event (and its own bounded state) and may alert."""
