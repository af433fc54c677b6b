from effc.cli import main

main()
