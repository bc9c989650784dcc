from lmtune.cli import main

main()
