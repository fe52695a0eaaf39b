from optbench.train import main

main()
