"""Backups of the config and the journal, and their restore (issue 6).

- `layout.py`: the backup directory's names, and durable-write helpers (fsync, atomic replace).
- `manifest.py`: what an archive holds (files, sizes, sha256, versions), parsed strictly.
- `archive.py`: write one tar.gz; read one back only through a strict check of every member.
- `database.py`: a consistent copy of the live SQLite journal (online backup API), checked.
- `create.py`: take one backup (stage, archive, verify, rename, publish, retention).
- `publish.py`: make a verified backup `backup-latest.tar.gz` and `config-latest/`.
- `retention.py`: which old backups to delete (never the newest good one).
- `catalog.py`: list backups with their verification cached.
- `scheduler.py`, `service.py`: the coordinator's scheduled and on-demand backups, `/status`.
- `restore.py`: check an archive completely, diff it, keep what it replaces, restore all or
  nothing; a restored database has the kill switch active until an operator reconciles.

The command line is `coordinator/backup_cli.py` (`bot-coordinator backup`, `restore`).
"""
