from __future__ import annotations

from llama_orchestrator.cli.fast import main

if __name__ == "__main__":
    main()
