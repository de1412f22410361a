"""faceid: keyboard-driven face identification in the terminal."""
