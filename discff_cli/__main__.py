from discff_cli.cli import main

main()
