"""The state directory's contents (runtime.py says where it is): a record
per tunnel, the kept failures, the daemon's health looks (with what an
interface reports of its peers) and the locks."""
