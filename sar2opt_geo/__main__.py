from sar2opt_geo.cli import main

if __name__ == "__main__":
    main()
