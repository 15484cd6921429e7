from tuneform.program import main

main()
