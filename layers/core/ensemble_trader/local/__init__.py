"""The local stack: a moto server, a real redis-server and emulated event-source mappings.

``LocalStack`` (in :mod:`.stack`) starts the services and creates every resource of
``constants.py``; :mod:`.functions` finds and loads the real handlers; :mod:`.esm` feeds them
real Lambda events; :mod:`.events` builds those event shapes. See docs/local-stack.md.
"""
