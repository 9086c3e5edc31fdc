from envd.cli import main

main()
