"""What a child process sends to MongoDB: the head of a probe script that records every
command name (pymongo command monitoring, registered before any client exists), and the
commands that write."""

#: Commands that change a database; the read path must send none of them.
WRITES = {"insert", "update", "delete", "findAndModify", "createIndexes", "create", "drop",
          "dropIndexes", "renameCollection"}

#: The start of a ``python -c`` script: after it, ``seen`` lists every command name sent.
LISTEN = r"""
import json, sys
import pymongo.monitoring as monitoring

seen = []


class Listener(monitoring.CommandListener):
    def started(self, event):
        seen.append(event.command_name)

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


monitoring.register(Listener())
"""
