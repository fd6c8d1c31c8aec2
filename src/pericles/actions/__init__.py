"""Named actions: commands with typed arguments, for people who should not write argv.

`catalog` reads the actions file and renders a call into a payload spec; `arguments` holds
the argument types and their JSON Schema; `template` fills `params`; `hooks` checks signed
webhook deliveries. The service runs the rendered spec like any other payload.
"""

from pericles.actions.catalog import EMPTY, Action, ActionsError, Catalog, Hook, load

__all__ = ["EMPTY", "Action", "ActionsError", "Catalog", "Hook", "load"]
