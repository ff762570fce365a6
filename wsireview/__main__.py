import sys

from wsireview.cli import main

sys.exit(main())
