"""``pagoda serve`` with the scripted model plugin registered in memory (tests only):
``python tests/scripted_model/serve.py serve CHECKPOINT ...``."""

import plugin

from pagoda.cli import main
from pagoda.plugin_manager import get_plugin_manager

if __name__ == "__main__":
    get_plugin_manager().register(plugin, "scripted_model")
    main()
