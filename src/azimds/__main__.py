from azimds.cli import main

main()
