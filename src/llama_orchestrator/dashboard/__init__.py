"""The live dashboard (``llama-orch dashboard``), a Textual app and thin daemon client.

Import ``llama_orchestrator.dashboard.app`` only inside the command: Textual is a heavy
import that no other command should pay for.
"""
