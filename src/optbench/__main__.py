from optbench.cli.train import main

main()
