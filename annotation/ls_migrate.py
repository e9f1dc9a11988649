"""Build a migrated, empty Label Studio database (run by the Label Studio venv's python, not the app's).

``python annotation/ls_migrate.py DIR`` writes DIR/label_studio.sqlite3 with every migration applied and no user,
organization or token in it. ``annotation.server.start`` copies it into a fresh data directory, which cuts the
first start from minutes (migrations on 2 cores) to seconds. Built by ``scripts/labelstudio-setup.sh``.
"""

import os
import sys
from pathlib import Path


def main(target: str) -> None:
    out = Path(target).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.update(LABEL_STUDIO_BASE_DATA_DIR=str(out), DJANGO_DB="sqlite", SENTRY_DSN="", FRONTEND_SENTRY_DSN="",
                      LATEST_VERSION_CHECK="false", COLLECT_ANALYTICS="false",
                      XDG_CONFIG_HOME=str(out / "xdg-config"), XDG_DATA_HOME=str(out / "xdg-data"))
    import label_studio  # noqa: PLC0415 - Label Studio's own venv, not this one

    sys.path.insert(0, os.path.dirname(label_studio.__file__))  # its apps import as top-level modules
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "label_studio.core.settings.label_studio")
    import django  # noqa: PLC0415 - Label Studio's own venv, not this one

    django.setup()
    from django.core.management import call_command  # noqa: PLC0415 - Label Studio's own venv, not this one

    call_command("migrate", "--no-color", verbosity=0)
    from users.models import User  # noqa: PLC0415 - Label Studio's own venv, not this one

    if User.objects.exists():
        raise SystemExit("template database unexpectedly has users")
    print(f"migrated {out / 'label_studio.sqlite3'}")


if __name__ == "__main__":
    main(sys.argv[1])
