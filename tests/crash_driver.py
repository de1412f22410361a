"""Makes triage decisions on a prepared inbox and acknowledges each one on stdout, so that
test_crash.py can SIGKILL it at random moments and check that every acknowledged decision was
kept. Run: python -m tests.crash_driver ROOT MODELS"""

from __future__ import annotations

import sys
from pathlib import Path

from faceid_tui.config import Settings, open_session


def main(root: Path, models: Path) -> None:
    session = open_session(Settings(bank_dir=root / "id_bank", models_dir=models),
                           root / "inbox", root / "out")
    for photo in session.photos():
        for face in session.faces(photo.sha256):
            if face.decided:
                continue
            if face.face_id % 3 == 0:
                session.reject(face.face_id)
                decision, name = "rejected", None
            else:
                name = f"Person {face.face_id % 4}"
                session.name_face(face.face_id, name)
                decision = "confirmed"
            print(f"ack {face.face_id} {decision} {name}", flush=True)
    session.close()
    print("done", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
