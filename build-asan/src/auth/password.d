build-asan/src/auth/password.o: src/auth/password.c src/auth/password.h
src/auth/password.h:
